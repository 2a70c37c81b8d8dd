//! The Docker CLI habits, typed as a new user would: `rm -f $(ps -q)`, IDs
//! and ID prefixes wherever a name goes (with Docker's errors for a miss and
//! an ambiguous prefix), `ps -q/--filter/--format`, `inspect -f` and `info`.
//! Addresses that `inspect` reports are checked against the sandbox's real
//! interface, and `info`'s attachments and map fill against the kernel's.
use netpath_tests::{Lab, host_ifname, lab, output, sandboxes};

/// (exit code, stdout, stderr) of `netpath ARGS`.
fn np(lab: &Lab, args: &[&str]) -> (i32, String, String) {
    output(&mut lab.netpath(args).unwrap()).unwrap()
}

fn ids(lab: &Lab) -> Vec<String> {
    lab.netpath_ok(&["ps", "-q"]).unwrap().lines().map(String::from).collect()
}

fn id_of(lab: &Lab, name: &str) -> String {
    let all = sandboxes(lab).unwrap();
    let s = all.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no sandbox {name}"));
    s["id"].as_str().unwrap().to_string()
}

/// The shortest prefix of `id` that no other ID in `all` starts with.
fn unique_prefix(id: &str, all: &[String]) -> String {
    (1..=id.len()).map(|n| &id[..n]).find(|p| all.iter().filter(|o| o.starts_with(p)).count() == 1).unwrap().to_string()
}

#[test]
fn docker_cli_habits() {
    let lab = lab("cli");
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.61.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "web"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "api", "--network", "n1", "--ip", "10.61.0.20"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "cache", "--network", "n1", "--network-alias", "cc", "-p", "8080:80"])
        .unwrap();

    // ps -q: one short ID per sandbox, the same ones --format prints.
    let short = ids(&lab);
    assert_eq!(short.len(), 3, "{short:?}");
    assert!(short.iter().all(|i| i.len() == 12 && i.chars().all(|c| c.is_ascii_hexdigit())), "{short:?}");
    let formatted = lab.netpath_ok(&["ps", "--format", "{{.Names}} {{.ID}}"]).unwrap();
    let mut rows: Vec<&str> = formatted.lines().collect();
    rows.sort();
    let mut expected: Vec<String> =
        ["web", "api", "cache"].iter().map(|n| format!("{n} {}", &id_of(&lab, n)[..12])).collect();
    expected.sort();
    assert_eq!(rows, expected);
    let full = lab.netpath_ok(&["ps", "-q", "--no-trunc"]).unwrap();
    assert!(full.lines().all(|l| l.len() == 64), "{full}");

    // ps --filter: network by name and by ID prefix, name by part, id by prefix.
    let names = |args: &[&str]| {
        let mut argv = vec!["ps", "--format", "{{.Names}}"];
        argv.extend(args);
        let mut v: Vec<String> = lab.netpath_ok(&argv).unwrap().lines().map(String::from).collect();
        v.sort();
        v
    };
    let n1_id = lab.netpath_ok(&["network", "inspect", "-f", "{{.Id}}", "n1"]).unwrap().trim().to_string();
    assert_eq!(names(&["--filter", "network=n1"]), ["api", "cache"]);
    assert_eq!(names(&["--filter", &format!("network={}", &n1_id[..8])]), ["api", "cache"]);
    assert_eq!(names(&["--filter", "network=bridge"]), ["web"]);
    assert_eq!(names(&["-f", "name=cach", "-f", "name=we"]), ["cache", "web"]);
    assert_eq!(names(&["-f", "network=n1", "-f", "name=a"]), ["api", "cache"]);
    assert_eq!(names(&["-f", &format!("id={}", &id_of(&lab, "api")[..10])]), ["api"]);
    let (code, _, err) = np(&lab, &["ps", "--filter", "label=x"]);
    assert_ne!(code, 0);
    assert!(err.contains("Invalid filter 'label'"), "{err}");
    let table = lab.netpath_ok(&["ps", "-f", "name=cache", "--format", "table {{.Names}}\\t{{.Ports}}"]).unwrap();
    assert_eq!(table, "NAMES     PORTS\ncache     0.0.0.0:8080->80/tcp\n");

    // inspect -f: the default network's address, as the interface has it.
    let a_ip = lab.netpath_ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"]).unwrap().trim().to_string();
    let a_addr = lab.netpath_ok(&["exec", "web", "ip", "-o", "-4", "addr", "show", "eth0"]).unwrap();
    assert!(a_ip.starts_with("172.17.") && a_addr.contains(&format!("inet {a_ip}/16")), "{a_ip} vs {a_addr}");
    // User-defined networks: empty at the top, as Docker's, and under Networks.
    let b_prefix = unique_prefix(&id_of(&lab, "api"), &ids(&lab));
    assert_eq!(lab.netpath_ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &b_prefix]).unwrap(), "\n");
    let b_ip = lab
        .netpath_ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &b_prefix])
        .unwrap();
    assert_eq!(b_ip.trim(), "10.61.0.20");
    let c = lab
        .netpath_ok(&[
            "inspect",
            "-f",
            "{{json .NetworkSettings.Ports}} {{.NetworkSettings.Networks.n1.Aliases}}",
            "cache",
        ])
        .unwrap();
    assert_eq!(
        c.trim(),
        format!(r#"{{"80/tcp":[{{"HostIp":"0.0.0.0","HostPort":"8080"}}]}} [cc {}]"#, &id_of(&lab, "cache")[..12])
    );
    let doc: serde_json::Value = serde_json::from_str(&lab.netpath_ok(&["inspect", "web", "cache"]).unwrap()).unwrap();
    assert_eq!((doc[0]["Name"].as_str(), doc[1]["Name"].as_str()), (Some("/web"), Some("/cache")));
    assert_eq!(doc[0]["NetworkSettings"]["MacAddress"].as_str().unwrap().len(), 17);
    // A network through the same command, and by its ID prefix elsewhere.
    assert_eq!(lab.netpath_ok(&["inspect", "-f", "{{.Name}} {{.Driver}}", "n1"]).unwrap(), "n1 bridge\n");
    let subnet = lab.netpath_ok(&["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", &n1_id[..6]]);
    assert_eq!(subnet.unwrap(), "10.61.0.0/24\n");
    assert!(lab.netpath_ok(&["network", "ls", "-q"]).unwrap().lines().any(|l| l == &n1_id[..12]));
    let (code, _, err) = np(&lab, &["inspect", "nosuch"]);
    assert_eq!((code, err.as_str()), (1, "Error: No such object: nosuch\n"));

    // Prefixes in every command that names a sandbox.
    let a_prefix = unique_prefix(&id_of(&lab, "web"), &ids(&lab));
    let hostname = lab.netpath_ok(&["exec", &a_prefix, "--", "hostname"]).unwrap();
    assert_eq!(hostname.trim(), &id_of(&lab, "web")[..12]);
    let c_prefix = unique_prefix(&id_of(&lab, "cache"), &ids(&lab));
    assert_eq!(lab.netpath_ok(&["port", &c_prefix, "80"]).unwrap(), "0.0.0.0:8080\n");
    lab.netpath_ok(&["network", "connect", &n1_id[..12], &a_prefix]).unwrap();
    let nets = lab.netpath_ok(&["ps", "-f", "name=web", "--format", "{{.Networks}}"]).unwrap();
    assert_eq!(nets.trim(), "bridge,n1");
    lab.netpath_ok(&["network", "disconnect", "n1", &id_of(&lab, "web")]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "joiner", "--network", &format!("container:{a_prefix}")]).unwrap();
    let j_ns = lab.netpath_ok(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", "joiner"]).unwrap();
    assert_eq!(j_ns.trim(), format!("container:{}", id_of(&lab, "web")));
    // joiner's random ID may share web's prefix: it is worked out again.
    let a_prefix = unique_prefix(&id_of(&lab, "web"), &ids(&lab));
    lab.netpath_ok(&["run", "-d", "--name", "linked", "--link", &format!("{a_prefix}:www")]).unwrap();
    let hosts = lab.netpath_ok(&["exec", "linked", "cat", "/etc/hosts"]).unwrap();
    assert!(hosts.lines().any(|l| l.starts_with(&format!("{a_ip}\twww ")) && l.ends_with(" web")), "{hosts}");

    // A miss and an ambiguous prefix, in Docker's words, change nothing.
    let before = ids(&lab);
    let (code, out, err) = np(&lab, &["rm", "-f", "nosuch"]);
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", "Error: No such container: nosuch\n"));
    // Sandboxes (without networks: cheap) until two IDs share a first digit;
    // 16 hex digits make it certain by the 17th.
    let mut extra = 0;
    let shared = loop {
        let all = ids(&lab);
        let first = all.iter().map(|i| &i[..1]).find(|p| all.iter().filter(|o| o.starts_with(p)).count() > 1);
        if let Some(p) = first {
            break p.to_string();
        }
        assert!(extra < 17, "{all:?}");
        lab.netpath_ok(&["run", "-d", "--name", &format!("x{extra}"), "--network", "none"]).unwrap();
        extra += 1;
    };
    let before_ambiguous = ids(&lab);
    for args in [vec!["rm", "-f", &shared], vec!["exec", &shared, "true"], vec!["inspect", &shared]] {
        let (code, out, err) = np(&lab, &args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert_eq!(err, format!("Error response from daemon: multiple IDs found with provided prefix: {shared}\n"));
    }
    assert_eq!(ids(&lab), before_ambiguous);
    assert!(before.iter().all(|i| before_ambiguous.contains(i)));

    // info: the programs, where they are attached, and map fill, as the kernel has them.
    let info = lab.netpath_ok(&["info"]).unwrap();
    assert!(info.contains("Data path: loaded") && info.contains("(this build)"), "{info}");
    for program in ["from_container", "from_uplink", "to_uplink", "sock_connect4", "ENDPOINTS", "CONNTRACK"] {
        assert!(info.contains(program), "{program} missing from {info}");
    }
    let attached = lab
        .netpath_ok(&[
            "info",
            "-f",
            "{{range .Datapath.Programs}}{{if eq .Name \"from_container\"}}{{join .AttachedTo \" \"}}{{end}}{{end}}",
        ])
        .unwrap();
    let mut attached: Vec<&str> = attached.split_whitespace().collect();
    attached.sort();
    let mut veths: Vec<String> =
        ["web", "api", "cache", "linked"].iter().map(|n| host_ifname(&lab, n).unwrap()).collect();
    veths.sort();
    assert_eq!(attached, veths);
    let fill = lab
        .netpath_ok(&["info", "-f", "{{range .Datapath.Maps}}{{if eq .Name \"ENDPOINTS\"}}{{.Entries}}{{end}}{{end}}"])
        .unwrap();
    let endpoints = lab.datapath().endpoints().unwrap().keys().count();
    assert!(endpoints >= 4, "web, api, cache and linked have an address each: {endpoints}");
    assert_eq!(fill.trim(), endpoints.to_string());
    let uplinks = lab.netpath_ok(&[
        "info",
        "-f",
        "{{range .Datapath.Programs}}{{if eq .Name \"from_uplink\"}}{{json .AttachedTo}}{{end}}{{end}}",
    ]);
    assert_ne!(uplinks.unwrap().trim(), "[]");

    // rm -f $(ps -q): every sandbox goes, joiners included, each ID echoed.
    let all = ids(&lab);
    let mut argv = vec!["rm", "-f"];
    argv.extend(all.iter().map(String::as_str));
    let removed = lab.netpath_ok(&argv).unwrap();
    assert_eq!(removed.lines().collect::<Vec<_>>(), all.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(lab.netpath_ok(&["ps", "-q"]).unwrap(), "");
    assert!(lab.roots.netns_dir().read_dir().map_or(true, |mut d| d.next().is_none()), "namespaces left");
    assert_eq!(lab.netpath_ok(&["network", "rm", &n1_id[..10]]).unwrap(), format!("{}\n", &n1_id[..10]));
}
