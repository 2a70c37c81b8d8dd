//! The benchmark rig in its smoke mode (tiny transfers, one run each): every
//! scenario of every system it measures must have carried its traffic
//! through the system under test, not around it — netpath's data path and
//! XDP counters, the packet counters of the iptables baselines', Docker's
//! and netavark's rules, the docker-proxy processes' work, the bounds'
//! server interfaces. No figure is checked against a threshold.
use netpath_lab::bench::{
    self, BenchArgs,
    catalog::{Scenario, System},
};
use netpath_tests::bins;

#[test]
fn every_bench_scenario_goes_through_the_system_under_test() {
    let args = BenchArgs {
        quick: false,
        smoke: true,
        scenarios: Vec::new(),
        systems: Vec::new(),
        no_scaling: false,
        out: std::env::temp_dir(),
    };
    let plan = bench::Plan::from_args(&args).unwrap();
    assert_eq!(plan.systems, System::ALL, "the smoke run covers every system of the rig");
    let report = bench::execute(&plan, &bins()).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    for system in System::ALL {
        for &scenario in system.scenarios() {
            let r = report
                .results
                .iter()
                .find(|r| r.system == system && r.scenario == scenario)
                .unwrap_or_else(|| panic!("{system:?} / {scenario:?} was not measured"));
            assert!(r.errors.is_empty(), "{system:?} / {scenario:?}: {:?}", r.errors);
            assert!(r.evidence > 0, "{system:?} / {scenario:?}: traffic did not go through the system under test");
            for key in ["tput1_gbps", "tcp_rr_p99_us", "conn_per_s"] {
                assert!(r.figures.contains_key(key), "{system:?} / {scenario:?}: no {key}");
            }
            // A system that answers UDP from the wrong address has no UDP
            // latency, only the limitation found (docker-proxy's hairpin).
            assert!(
                r.figures.contains_key("udp_rr_p99_us") || !r.limitations.is_empty(),
                "{system:?} / {scenario:?}: no UDP latency and no reason"
            );
            if matches!(system, System::Netpath | System::NetpathXdp | System::NetpathTcSameWire) {
                assert!(r.limitations.is_empty(), "{system:?} / {scenario:?}: {:?}", r.limitations);
            }
            if scenario == Scenario::Published {
                assert!(r.figures.contains_key("wire_pps"), "{system:?}: no wire pps");
            }
        }
    }
    assert!(
        report.results.iter().all(|r| r.system.scenarios().contains(&r.scenario)),
        "a system was measured in a scenario it does not claim"
    );
    for system in [System::Netpath, System::IptablesNft] {
        let sizes: Vec<usize> = report.ports.iter().filter(|p| p.system == system).map(|p| p.size).collect();
        assert_eq!(sizes, plan.port_sizes, "{system:?} scaling points");
        assert!(
            report.ports.iter().filter(|p| p.system == system).all(|p| p.conn_per_s.is_some() && p.add_us.is_some())
        );
    }
    assert_eq!(report.control_plane.len(), plan.sandbox_sizes.len());
    for scenario in Scenario::ALL {
        let r = report.crowded.iter().find(|r| r.scenario == scenario);
        let r = r.unwrap_or_else(|| panic!("{scenario:?} not measured again with the sandboxes up"));
        assert!(r.errors.is_empty() && r.evidence > 0, "{scenario:?} with the sandboxes up: {:?}", r.errors);
    }
    assert!(!bench::report::markdown(&report).is_empty());
}
