//! The shipped `netpath` binary carries only what a user runs: the test and
//! benchmark rig (lab fixture, probes, demo, bench and the wire sender's
//! kernel object) is the separate `netpath-lab` binary.
use std::process::Command;

use netpath_tests::{bins, output};

#[test]
fn the_rig_ships_apart_from_the_product() {
    let b = bins();
    // `--help`, so that a binary that still had these would only print help.
    for rig_command in ["lab", "demo", "bench", "tcp-sink", "wire-send"] {
        let (code, _, err) = output(Command::new(&b.netpath).args([rig_command, "--help"])).unwrap();
        assert_ne!(code, 0, "netpath {rig_command} must not exist");
        assert!(err.contains("unrecognized subcommand"), "netpath {rig_command}: {err}");
    }
    for probe in ["demo", "bench", "tcp-sink", "udp-sink", "wire-send", "dig", "rr-client", "conn-rate"] {
        let (code, help, err) = output(Command::new(&b.lab).args([probe, "--help"])).unwrap();
        assert_eq!(code, 0, "netpath-lab {probe}: {err}");
        assert!(help.contains("Usage: netpath-lab"), "{help}");
    }
    // The wire sender's XDP program is embedded in the rig, not the product.
    let needle = b"lab_wire";
    let has = |path: &std::path::Path| std::fs::read(path).unwrap().windows(needle.len()).any(|w| w == needle);
    assert!(has(&b.lab), "the rig embeds its lab_wire object");
    assert!(!has(&b.netpath), "the product carries no lab_wire object");
}
