//! The Docker Engine API reads `netpath port CONTAINER` needs: which
//! endpoints a container has (`GET /containers/NAME/json`), over Docker's
//! Unix socket (`--docker-host`, `DOCKER_HOST`, default
//! `unix:///run/docker.sock`).
use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;

pub const DEFAULT_HOST: &str = "unix:///run/docker.sock";

/// A container's name as Docker shows it, and its endpoint IDs.
#[derive(Debug)]
pub struct Container {
    pub name: String,
    pub endpoint_ids: Vec<String>,
}

/// Asks Docker at `docker_host` for container `query` (a name or ID, as
/// `docker inspect` takes it).
pub fn container(docker_host: &str, query: &str) -> Result<Container> {
    let Some(socket) = docker_host.strip_prefix("unix://") else {
        bail!("Docker host {docker_host:?}: only unix:// sockets are supported");
    };
    if query.is_empty() || !query.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        bail!("invalid container name {query:?}");
    }
    let path = format!("/containers/{query}/json");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (status, body) = runtime.block_on(async {
        let stream = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::UnixStream::connect(socket))
            .await
            .context("timed out")?
            .with_context(|| format!("connecting to Docker at {socket}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = Request::get(&path).header(hyper::header::HOST, "docker").body(Empty::<Bytes>::new())?;
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), sender.send_request(req))
            .await
            .context("Docker did not answer in time")??;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    })?;
    let doc: serde_json::Value = serde_json::from_slice(&body).context("Docker's answer")?;
    if !status.is_success() {
        bail!("{}", doc["message"].as_str().unwrap_or("Docker refused the request"));
    }
    parse(&doc)
}

fn parse(doc: &serde_json::Value) -> Result<Container> {
    let name = doc["Name"].as_str().context("Docker's answer has no Name")?.trim_start_matches('/').to_string();
    let endpoint_ids = doc["NetworkSettings"]["Networks"]
        .as_object()
        .map(|nets| nets.values().filter_map(|n| n["EndpointID"].as_str()).filter(|id| !id.is_empty()))
        .into_iter()
        .flatten()
        .map(str::to_string)
        .collect();
    Ok(Container { name, endpoint_ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_containers_endpoints() {
        let doc = serde_json::json!({"Name": "/web", "NetworkSettings": {"Networks": {
            "n1": {"EndpointID": "abc", "IPAddress": "10.88.0.2"}, "n2": {"EndpointID": ""}}}});
        let c = parse(&doc).unwrap();
        assert_eq!((c.name.as_str(), c.endpoint_ids.as_slice()), ("web", ["abc".to_string()].as_slice()));
        assert!(container("tcp://1.2.3.4:2375", "web").unwrap_err().to_string().contains("unix://"));
        assert!(container("unix:///nonexistent", "../x").unwrap_err().to_string().contains("invalid"));
    }
}
