//! What `ps` and `network ls` print beyond their default tables: one row
//! document per object with Docker's field names (`{{.ID}}`, `{{.Names}}`,
//! `{{.Networks}}`, `{{.Ports}}`, ...), `--filter KEY=VALUE` as Docker
//! matches it, and `--format` (a Go template per row; `table ...` adds a
//! header row and aligns the tab-separated columns, as Docker does).
use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::{
    publish::Published,
    sandbox,
    state::{Network, Sandbox, State},
    template::{self, Template},
};

/// `--filter` values by key; values of one key match if any matches, and
/// every key must match (Docker's rule).
#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses `KEY=VALUE` items, accepting only `keys`.
    pub fn parse(items: &[String], keys: &[&str]) -> Result<Filters> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for item in items {
            let Some((k, v)) = item.split_once('=') else {
                bail!("bad format of filter (expected name=value)");
            };
            let k = k.trim().to_lowercase();
            if !keys.contains(&k.as_str()) {
                bail!("Invalid filter '{k}'");
            }
            map.entry(k).or_default().push(v.to_string());
        }
        Ok(Filters(map))
    }

    /// Whether, for every key given, `matches` holds for one of its values.
    fn admit(&self, matches: impl Fn(&str, &str) -> bool) -> bool {
        self.0.iter().all(|(k, values)| values.iter().any(|v| matches(k, v)))
    }
}

/// An output `--format`: a row template, and whether it is a table.
pub struct Format {
    template: Template,
    table: bool,
}

impl Format {
    /// Docker's `--format`: `table` first means a header and aligned
    /// columns; `\t` and `\n` typed literally stand for tab and newline.
    pub fn parse(text: &str) -> Result<Format> {
        let (table, rest) = match text.strip_prefix("table") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let source = rest.trim_matches(' ').replace("\\t", "\t").replace("\\n", "\n");
        Ok(Format { template: Template::parse(&source)?, table })
    }

    /// Every row through the template, one line each; a table starts with
    /// the template applied to `header` (field name -> column title).
    pub fn render(&self, header: &Value, rows: &[Value]) -> Result<String> {
        let mut out = String::new();
        if self.table {
            out.push_str(&self.template.render(header)?);
            out.push('\n');
        }
        for row in rows {
            out.push_str(&self.template.render(row)?);
            out.push('\n');
        }
        Ok(if self.table { template::align_tabs(&out) } else { out })
    }
}

/// The `Ports` column of `docker ps`: `0.0.0.0:8080->80/tcp`, ranges as
/// `0.0.0.0:9000-9001->80-81/tcp`, exposed-only ports as `81/tcp`.
pub fn ports_column(published: &[Published], expose: &[(u16, crate::publish::Proto)]) -> String {
    let mut parts: Vec<String> = published
        .iter()
        .map(|m| {
            let last = m.port_count() - 1;
            let (host, container) = if last == 0 {
                (m.host_first.to_string(), m.container_first.to_string())
            } else {
                (
                    format!("{}-{}", m.host_first, m.host_last),
                    format!("{}-{}", m.container_first, m.container_first + last),
                )
            };
            format!("{}:{host}->{container}/{}", m.host_ip, m.proto.name())
        })
        .collect();
    for (port, proto) in expose {
        let covered = published.iter().any(|m| {
            let first = u32::from(m.container_first);
            m.proto == *proto && (first..first + u32::from(m.port_count())).contains(&u32::from(*port))
        });
        if !covered {
            parts.push(format!("{port}/{}", proto.name()));
        }
    }
    parts.join(", ")
}

/// A sandbox's `Status` column: `running (pid N)` while its detached
/// command runs, else `up` (the namespace stays up without a process).
pub fn sandbox_status(s: &Sandbox) -> String {
    if sandbox::is_running(s) { format!("running (pid {})", s.pid.unwrap_or(0)) } else { "up".to_string() }
}

/// `ps` row fields (Docker's names where Docker has them) and their titles.
pub fn sandbox_header() -> Value {
    json!({
        "ID": "SANDBOX ID", "Names": "NAMES", "Networks": "NETWORKS", "IPAddress": "IP ADDRESS",
        "Ports": "PORTS", "Status": "STATUS", "Command": "COMMAND", "CreatedAt": "CREATED AT",
    })
}

/// `ps --format` row of one sandbox; IDs cut to 12 digits unless `full`.
pub fn sandbox_row(s: &Sandbox, full: bool) -> Value {
    let command = s.command.join(" ");
    let command = if !full && command.chars().count() > 20 {
        format!("{}…", command.chars().take(19).collect::<String>())
    } else {
        command
    };
    json!({
        "ID": if full { &s.id[..] } else { &s.id[..12] },
        "Names": s.name,
        "Networks": s.attachments.iter().map(|a| a.network.as_str()).collect::<Vec<_>>().join(","),
        "IPAddress": s.attachments.first().map(|a| a.ip.to_string()).unwrap_or_default(),
        "Ports": ports_column(&s.published, &s.expose),
        "Status": sandbox_status(s),
        "Command": serde_json::to_string(&command).unwrap_or_default(),
        "CreatedAt": s.created,
    })
}

pub const SANDBOX_FILTERS: &[&str] = &["id", "name", "network"];

/// Docker's `ps` filters: `id` (an ID prefix), `name` (part of the name),
/// `network` (a network's name, or a prefix of its ID).
pub fn sandbox_matches(state: &State, s: &Sandbox, filters: &Filters) -> bool {
    filters.admit(|key, value| match key {
        "id" => s.id.starts_with(value),
        "name" => s.name.contains(value.trim_start_matches('/')),
        "network" => s
            .attachments
            .iter()
            .any(|a| a.network == value || state.networks.get(&a.network).is_some_and(|n| n.id.starts_with(value))),
        _ => false,
    })
}

pub fn network_header() -> Value {
    json!({
        "ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv6": "IPV6",
        "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT", "Subnet": "SUBNET",
    })
}

pub fn network_row(n: &Network, full: bool) -> Value {
    json!({
        "ID": if full { &n.id[..] } else { &n.id[..12] },
        "Name": n.name,
        "Driver": n.driver,
        "Scope": crate::network::scope(n),
        "IPv6": false,
        "Internal": n.internal,
        "Labels": n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "CreatedAt": n.created,
        "Subnet": n.subnet.to_string(),
    })
}

pub const NETWORK_FILTERS: &[&str] = &["id", "name", "driver"];

/// Docker's `network ls` filters: `id` (prefix), `name` (part of the
/// name), `driver` (exactly).
pub fn network_matches(n: &Network, filters: &Filters) -> bool {
    filters.admit(|key, value| match key {
        "id" => n.id.starts_with(value),
        "name" => n.name.contains(value),
        "driver" => n.driver == value,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::Proto;

    #[test]
    fn filters_follow_dockers_rule() {
        let f = Filters::parse(&["name=a".into(), "name=b".into(), "id=1".into()], &["id", "name"]).unwrap();
        assert!(f.admit(|k, v| (k == "name" && v == "b") || (k == "id" && v == "1")));
        assert!(!f.admit(|k, _| k == "name"));
        let e = Filters::parse(&["label=x".into()], &["id"]).unwrap_err().to_string();
        assert_eq!(e, "Invalid filter 'label'");
        let e = Filters::parse(&["name".into()], &["name"]).unwrap_err().to_string();
        assert!(e.contains("expected name=value"), "{e}");
    }

    #[test]
    fn tables_have_a_header_and_aligned_columns() {
        let f = Format::parse("table {{.Names}}\\t{{.ID}}").unwrap();
        let rows = [json!({"Names": "web", "ID": "0123456789ab"}), json!({"Names": "a-long-name", "ID": "ba98"})];
        let out = f.render(&sandbox_header(), &rows).unwrap();
        assert_eq!(out, "NAMES         SANDBOX ID\nweb           0123456789ab\na-long-name   ba98\n");
        let plain = Format::parse("{{.Names}} {{.ID}}").unwrap().render(&sandbox_header(), &rows).unwrap();
        assert_eq!(plain, "web 0123456789ab\na-long-name ba98\n");
    }

    #[test]
    fn ports_read_as_docker_ps_prints_them() {
        let one = Published {
            proto: Proto::Tcp,
            host_ip: "0.0.0.0".parse().unwrap(),
            host_first: 8080,
            host_last: 8080,
            container_first: 80,
            range_slot: None,
        };
        let range =
            Published { proto: Proto::Udp, host_first: 9000, host_last: 9001, container_first: 53, ..one.clone() };
        assert_eq!(
            ports_column(&[one, range], &[(80, Proto::Tcp), (81, Proto::Tcp)]),
            "0.0.0.0:8080->80/tcp, 0.0.0.0:9000-9001->53-54/udp, 81/tcp"
        );
    }
}
