//! What the data path counted, read from the pinned per-CPU counters.
use std::time::{Duration, Instant};

use anyhow::Result;
use netpath_common::{Counters, Program};

use crate::{datapath::Datapath, paths::Roots};

/// Counters of every program, in `Program::ALL` order; zeros when the data
/// path is not loaded.
pub fn read(datapath: &Datapath) -> Result<Vec<(Program, Counters)>> {
    Program::ALL
        .iter()
        .map(|&p| Ok((p, if datapath.is_loaded() { datapath.counters(p)? } else { Counters::default() })))
        .collect()
}

/// A table of counters, with per-second rates when an earlier reading is given.
pub fn render(now: &[(Program, Counters)], before: Option<(&[(Program, Counters)], Duration)>) -> String {
    let mut out = format!("{:<16}{:<26}{:>16}{:>14}\n", "PROGRAM", "COUNTER", "TOTAL", "PER SECOND");
    for (i, (program, counters)) in now.iter().enumerate() {
        let earlier = before.map(|(b, dt)| (b[i].1.fields(), dt.as_secs_f64()));
        for (j, (name, value)) in counters.fields().iter().enumerate() {
            let rate = earlier
                .map(|(f, secs)| format!("{:.0}", value.saturating_sub(f[j].1) as f64 / secs.max(1e-3)))
                .unwrap_or_default();
            out.push_str(&format!("{:<16}{:<26}{:>16}{:>14}\n", program.name(), name, value, rate));
        }
    }
    out
}

pub fn to_json(now: &[(Program, Counters)]) -> serde_json::Value {
    let programs: serde_json::Map<String, serde_json::Value> = now
        .iter()
        .map(|(p, c)| {
            let fields: serde_json::Map<String, serde_json::Value> =
                c.fields().iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
            (p.name().to_string(), fields.into())
        })
        .collect();
    serde_json::Value::Object(programs)
}

pub fn show(roots: &Roots, json: bool, watch: bool) -> Result<i32> {
    let datapath = Datapath::at(&roots.bpf);
    let mut previous: Option<(Vec<(Program, Counters)>, Instant)> = None;
    loop {
        let now = read(&datapath)?;
        if json {
            println!("{}", to_json(&now));
        } else {
            let before = previous.as_ref().map(|(b, t)| (b.as_slice(), t.elapsed()));
            if watch {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render(&now, before));
        }
        if !watch || crate::signals::interrupted() {
            return Ok(0);
        }
        previous = Some((now, Instant::now()));
        crate::signals::sleep_unless_interrupted(Duration::from_secs(1));
    }
}
