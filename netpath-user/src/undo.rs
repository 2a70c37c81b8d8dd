//! Rollback for multi-step setup: each step that changes the system registers
//! how to reverse it; unless the whole sequence commits, the reversals run in
//! reverse order, and each one runs even when an earlier one failed.
type Reverse<'a> = Box<dyn FnOnce() -> anyhow::Result<()> + 'a>;

pub struct Undo<'a> {
    steps: Vec<(String, Reverse<'a>)>,
}

impl<'a> Undo<'a> {
    pub fn new() -> Self {
        Undo { steps: Vec::new() }
    }

    pub fn push(&mut self, what: impl Into<String>, reverse: impl FnOnce() -> anyhow::Result<()> + 'a) {
        self.steps.push((what.into(), Box::new(reverse)));
    }

    /// Keeps every change made so far.
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl Default for Undo<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        while let Some((what, reverse)) = self.steps.pop() {
            if let Err(e) = reverse() {
                eprintln!("warning: rolling back {what}: {e:#}");
            }
        }
    }
}
