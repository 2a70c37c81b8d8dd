//! The one way netpath takes things down: every step runs to the end and
//! every failure is returned together (as netavark's error list does), so
//! one thing that cannot be removed neither hides another nor keeps the rest
//! in place.
//!
//! [`Teardown`] collects the outcome of removal steps (`rm`, `network rm`,
//! `system reset`); [`Rollback`] records how to reverse each step of a setup
//! and, when the setup fails, reverses them all through a `Teardown` and
//! returns the setup's error with every rollback failure attached.
use std::fmt;

use anyhow::{Error, Result};

/// Failures of several removal steps, in the order the steps ran.
#[derive(Debug)]
pub struct Failures(pub Vec<Error>);

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} steps failed", self.0.len())?;
        for (i, e) in self.0.iter().enumerate() {
            // Each failure on one line of its own words, outermost first.
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            write!(f, "{} ({}) {}", if i == 0 { ":" } else { ";" }, i + 1, chain.join(": "))?;
        }
        Ok(())
    }
}

impl std::error::Error for Failures {}

/// Collects the outcome of removal steps; see the module documentation.
#[derive(Debug, Default)]
#[must_use = "a teardown reports its failures only through finish()"]
pub struct Teardown {
    failures: Vec<Error>,
}

impl Teardown {
    pub fn new() -> Self {
        Teardown::default()
    }

    /// Records the outcome of one step named `what`. A step that was itself
    /// a teardown contributes each of its failures.
    pub fn step(&mut self, what: impl fmt::Display, result: Result<()>) {
        let Err(e) = result else { return };
        match e.downcast::<Failures>() {
            Ok(Failures(inner)) => {
                self.failures.extend(inner.into_iter().map(|e| e.context(what.to_string())));
            }
            Err(e) => self.failures.push(e.context(what.to_string())),
        }
    }

    /// Merges another teardown's failures, as they are.
    pub fn absorb(&mut self, result: Result<()>) {
        let Err(e) = result else { return };
        match e.downcast::<Failures>() {
            Ok(Failures(inner)) => self.failures.extend(inner),
            Err(e) => self.failures.push(e),
        }
    }

    pub fn is_clean(&self) -> bool {
        self.failures.is_empty()
    }

    /// Ok when every step succeeded; the one failure, or all of them.
    pub fn finish(mut self) -> Result<()> {
        match self.failures.len() {
            0 => Ok(()),
            1 => Err(self.failures.remove(0)),
            _ => Err(Failures(self.failures).into()),
        }
    }
}

/// A setup that failed and whose rollback failed too: both are reported, the
/// setup's reason first.
#[derive(Debug)]
pub struct RolledBackBadly {
    pub cause: Error,
    pub rollback: Error,
}

impl fmt::Display for RolledBackBadly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (rolling back also failed: {})", one_line(&self.cause), one_line(&self.rollback))
    }
}

impl std::error::Error for RolledBackBadly {}

type Reverse<'a> = Box<dyn FnOnce() -> Result<()> + 'a>;

/// Reversals of the steps a setup has made so far; see the module
/// documentation. Either [`commit`](Rollback::commit) keeps the changes or
/// [`fail`](Rollback::fail) reverses them; dropping it with steps still
/// recorded (a `?` that skipped both) reverses them too, as a last resort.
#[must_use = "commit() keeps the changes, fail() reverses them"]
pub struct Rollback<'a> {
    steps: Vec<(String, Reverse<'a>)>,
}

impl<'a> Rollback<'a> {
    pub fn new() -> Self {
        Rollback { steps: Vec::new() }
    }

    /// Records how to reverse a step that just succeeded.
    pub fn push(&mut self, what: impl Into<String>, reverse: impl FnOnce() -> Result<()> + 'a) {
        self.steps.push((what.into(), Box::new(reverse)));
    }

    /// Keeps every change made so far.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// Reverses every recorded step, last first, each one even when an
    /// earlier one failed. Returns `error` (why the setup failed), carrying
    /// the reversals that failed as well.
    pub fn fail(mut self, error: Error) -> Error {
        match self.reverse().finish() {
            Ok(()) => error,
            Err(undo) => RolledBackBadly { cause: error, rollback: undo }.into(),
        }
    }

    /// Runs `apply`; keeps its changes when it succeeds, reverses them all
    /// when it fails.
    pub fn run<T>(mut self, apply: impl FnOnce(&mut Rollback<'a>) -> Result<T>) -> Result<T> {
        match apply(&mut self) {
            Ok(value) => {
                self.commit();
                Ok(value)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn reverse(&mut self) -> Teardown {
        let mut teardown = Teardown::new();
        while let Some((what, reverse)) = self.steps.pop() {
            teardown.step(format!("rolling back {what}"), reverse());
        }
        teardown
    }
}

impl Default for Rollback<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        // Only reached when neither commit() nor fail() ran: a panic, or a
        // code path that forgot them. Reversing is still right; there is no
        // caller left to hand failures to.
        let _ = self.reverse().finish();
    }
}

fn one_line(e: &Error) -> String {
    e.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use anyhow::anyhow;

    use super::*;

    #[test]
    fn every_step_runs_and_every_failure_is_reported() {
        let mut t = Teardown::new();
        t.step("a", Err(anyhow!("first")));
        t.step("b", Ok(()));
        t.step("c", Err(anyhow!("second")));
        let text = one_line(&t.finish().unwrap_err());
        assert!(text.contains("2 steps failed"), "{text}");
        assert!(text.contains("a: first") && text.contains("c: second"), "{text}");
    }

    #[test]
    fn nested_teardowns_flatten_with_their_step_names() {
        let mut inner = Teardown::new();
        inner.step("veth", Err(anyhow!("busy")));
        inner.step("pin", Err(anyhow!("is a directory")));
        let mut outer = Teardown::new();
        outer.step("sandbox s1", inner.finish());
        outer.step("network n1", Err(anyhow!("in use")));
        let Failures(all) = outer.finish().unwrap_err().downcast::<Failures>().unwrap();
        let lines: Vec<String> = all.iter().map(one_line).collect();
        assert_eq!(lines, ["sandbox s1: veth: busy", "sandbox s1: pin: is a directory", "network n1: in use"]);
        assert!(Teardown::new().finish().is_ok());
    }

    #[test]
    fn rollback_reverses_in_reverse_order_and_keeps_going() {
        let log = RefCell::new(Vec::new());
        let result: Result<()> = Rollback::new().run(|rb| {
            rb.push("one", || {
                log.borrow_mut().push(1);
                Ok(())
            });
            rb.push("two", || {
                log.borrow_mut().push(2);
                Err(anyhow!("stuck"))
            });
            rb.push("three", || {
                log.borrow_mut().push(3);
                Ok(())
            });
            Err(anyhow!("setup failed"))
        });
        assert_eq!(*log.borrow(), [3, 2, 1]);
        let text = one_line(&result.unwrap_err());
        assert!(text.contains("setup failed") && text.contains("rolling back two: stuck"), "{text}");

        log.borrow_mut().clear();
        let kept: Result<u8> = Rollback::new().run(|rb| {
            rb.push("one", || {
                log.borrow_mut().push(1);
                Ok(())
            });
            Ok(7)
        });
        assert_eq!(kept.unwrap(), 7);
        assert!(log.borrow().is_empty(), "a committed setup is kept");
    }
}
