//! What the data path counted, read from the pinned per-CPU counters: one
//! row per program and verdict reason, by name.
use std::time::{Duration, Instant};

use anyhow::Result;
use netpath_common::{Counters, Program, Reason};

use crate::{datapath::Datapath, paths::Roots};

/// Counters of every program, in `Program::ALL` order; zeros when the data
/// path is not loaded.
pub fn read(datapath: &Datapath) -> Result<Vec<(Program, Counters)>> {
    Program::ALL
        .iter()
        .map(|&p| Ok((p, if datapath.is_loaded() { datapath.counters(p)? } else { Counters::default() })))
        .collect()
}

/// A table with one row per program and reason that counted anything (a
/// program that counted nothing gets one row saying so), with per-second
/// rates when an earlier reading is given.
pub fn render(now: &[(Program, Counters)], before: Option<(&[(Program, Counters)], Duration)>) -> String {
    let rates = before.is_some();
    let mut out = format!("{:<18}{:<30}{:>14}{:>16}", "PROGRAM", "REASON", "PACKETS", "BYTES");
    if rates {
        out.push_str(&format!("{:>14}", "PACKETS/S"));
    }
    out.push('\n');
    for (program, counters) in now {
        let earlier = before
            .and_then(|(b, dt)| b.iter().find(|(p, _)| p == program).map(|(_, c)| (c, dt.as_secs_f64().max(1e-3))));
        if counters.reasons().all(|(_, s)| s.packets == 0) {
            out.push_str(&format!("{:<18}{:<30}{:>14}{:>16}\n", program.name(), "-", 0, 0));
            continue;
        }
        for (reason, s) in counters.reasons() {
            if s.packets == 0 {
                continue;
            }
            out.push_str(&format!("{:<18}{:<30}{:>14}{:>16}", program.name(), reason.name(), s.packets, s.bytes));
            if rates {
                let rate = earlier.map_or(0.0, |(c, secs)| s.packets.saturating_sub(c.packets(reason)) as f64 / secs);
                out.push_str(&format!("{rate:>14.0}"));
            }
            out.push('\n');
        }
    }
    out
}

/// `{"PROGRAM": {"REASON": {"packets": N, "bytes": N}, ...}, ...}` with every
/// reason of every program, zeros included, so readers see a fixed shape.
pub fn to_json(now: &[(Program, Counters)]) -> serde_json::Value {
    let programs: serde_json::Map<String, serde_json::Value> = now
        .iter()
        .map(|(p, c)| {
            let reasons: serde_json::Map<String, serde_json::Value> = Reason::ALL
                .iter()
                .map(|&r| (r.name().to_string(), serde_json::json!({"packets": c.packets(r), "bytes": c.bytes(r)})))
                .collect();
            (p.name().to_string(), reasons.into())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_names_and_slots() {
        let mut names: Vec<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        let mut slots: Vec<_> = Reason::ALL.iter().map(|&r| r as usize).collect();
        names.sort();
        names.dedup();
        slots.sort();
        slots.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
        assert_eq!(slots.len(), Reason::ALL.len());
        assert!(slots.iter().all(|&s| s < netpath_common::REASON_SLOTS));
        for &r in Reason::ALL {
            assert_eq!(Reason::from_name(r.name()), Some(r));
            assert_eq!(r.is_drop(), r.name().starts_with("DROP_"), "{}", r.name());
        }
    }

    #[test]
    fn table_and_json_name_what_moved() {
        let mut c = Counters::default();
        c.slots[Reason::DropIcc as usize] = netpath_common::ReasonStats { packets: 3, bytes: 294 };
        let now = vec![(Program::FromContainer, c), (Program::ToUplink, Counters::default())];
        let table = render(&now, None);
        assert!(table.lines().any(|l| l.contains("from_container") && l.contains("DROP_ICC") && l.contains("294")));
        assert!(table.lines().any(|l| l.starts_with("to_uplink") && l.contains(" - ")), "{table}");
        assert_eq!(table.lines().count(), 3, "{table}");
        let json = to_json(&now);
        assert_eq!(json["from_container"]["DROP_ICC"]["packets"], 3);
        assert_eq!(json["to_uplink"]["FORWARDED"]["bytes"], 0);
    }
}
