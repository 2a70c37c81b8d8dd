//! The benchmark rig in its smoke mode (tiny transfers, one run each): every
//! scenario of every system it measures must have carried its traffic
//! through the system under test, not around it — netpath's data path
//! counters, the packet counters of the iptables baseline's rules, the
//! docker-proxy processes' work. No figure is checked against a threshold.
use netpath::bench::{
    self, BenchArgs,
    systems::{DOCKER_PROXY, Scenario, System},
};
use netpath_tests::netpath_bin;

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
    let mut plan = bench::Plan::from_args(&args).unwrap();
    let proxy = std::path::Path::new(DOCKER_PROXY).exists();
    if !proxy {
        plan.systems.retain(|s| *s != System::DockerProxy);
    }
    let report = bench::execute(&plan, &netpath_bin()).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    let mut expected: Vec<(System, Scenario)> = Vec::new();
    for system in [System::Netpath, System::IptablesNft] {
        expected.extend(Scenario::ALL.map(|s| (system, s)));
    }
    if proxy {
        expected.push((System::DockerProxy, Scenario::HostLocal));
    }
    for (system, scenario) in expected {
        let r = report
            .results
            .iter()
            .find(|r| r.system == system && r.scenario == scenario)
            .unwrap_or_else(|| panic!("{system:?} / {scenario:?} was not measured"));
        assert!(r.errors.is_empty(), "{system:?} / {scenario:?}: {:?}", r.errors);
        assert!(r.evidence > 0, "{system:?} / {scenario:?}: traffic did not go through the system under test");
        for key in ["tput1_gbps", "tcp_rr_p99_us", "udp_rr_p99_us", "conn_per_s"] {
            assert!(r.figures.contains_key(key), "{system:?} / {scenario:?}: no {key}");
        }
    }
    for system in [System::Netpath, System::IptablesNft] {
        let sizes: Vec<usize> = report.ports.iter().filter(|p| p.system == system).map(|p| p.size).collect();
        assert_eq!(sizes, plan.port_sizes, "{system:?} scaling points");
        assert!(
            report.ports.iter().filter(|p| p.system == system).all(|p| p.conn_per_s.is_some() && p.add_us.is_some())
        );
    }
    assert_eq!(report.control_plane.len(), plan.sandbox_sizes.len());
    assert!(!bench::report::markdown(&report).is_empty());
}
