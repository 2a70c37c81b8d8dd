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

/// A table of counters, one column per program, with per-second rates when
/// an earlier reading is given. Counters that are zero everywhere are left
/// out, so the table shows what the data path is doing.
pub fn render(now: &[(Program, Counters)], before: Option<(&[(Program, Counters)], Duration)>) -> String {
    let mut out = format!("{:<28}", "COUNTER");
    for (program, _) in now {
        out.push_str(&format!("{:>26}", program.name()));
    }
    out.push('\n');
    let fields: Vec<_> = now.iter().map(|(_, c)| c.fields()).collect();
    let earlier: Option<(Vec<_>, f64)> =
        before.map(|(b, dt)| (b.iter().map(|(_, c)| c.fields()).collect(), dt.as_secs_f64().max(1e-3)));
    for row in 0..Counters::FIELD_COUNT {
        let name = fields.first().map_or("", |f| f[row].0);
        if row > 0 && fields.iter().all(|f| f[row].1 == 0) {
            continue;
        }
        out.push_str(&format!("{name:<28}"));
        for (col, f) in fields.iter().enumerate() {
            let value = f[row].1;
            let cell = match &earlier {
                Some((e, secs)) => format!("{value} ({:.0}/s)", value.saturating_sub(e[col][row].1) as f64 / secs),
                None => value.to_string(),
            };
            out.push_str(&format!("{cell:>26}"));
        }
        out.push('\n');
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
