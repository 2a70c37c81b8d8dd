//! The plugin's socket: HTTP/1.1 (hyper) on a Unix socket, one task per
//! connection; each call runs on a blocking thread (the library's work is
//! synchronous and takes the state lock), so a slow call holds up no other
//! connection.
use std::{
    convert::Infallible,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use super::{handlers, protocol::CONTENT_TYPE};
use crate::paths::Roots;

/// Bodies larger than this are refused: Docker's are a few hundred bytes.
const MAX_BODY: usize = 1 << 20;

/// Serves the plugin on `socket` until SIGTERM or SIGINT; the socket file
/// goes then. Work a killed plugin left is finished before the first call
/// is answered (by the CLI's start-up check, as for every command, and
/// again at each call).
pub fn serve(roots: Roots, socket: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the plugin's runtime")?;
    runtime.block_on(async move {
        let listener = bind(socket)?;
        eprintln!("netpath docker-plugin: serving on {}", socket.display());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = accepted.context("accepting a connection")?;
                    let roots = roots.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| answer(roots.clone(), req));
                        if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                            eprintln!("netpath docker-plugin: connection: {e}");
                        }
                    });
                }
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        let _ = std::fs::remove_file(socket);
        Ok(())
    })
}

/// Binds `socket`, mode 0600 (Docker runs as root; nobody else may drive
/// the host's networking through it). A socket file nobody answers on (a
/// killed plugin's) is replaced; one that answers is another plugin's.
fn bind(socket: &Path) -> Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                bail!("{} is in use: another plugin serves there", socket.display());
            }
            std::fs::remove_file(socket).with_context(|| format!("removing the stale {}", socket.display()))?;
        }
        Ok(_) => bail!("{} exists and is not a socket", socket.display()),
        Err(_) => {}
    }
    // Created 0600 from the start rather than changed after binding.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(socket);
    nix::sys::stat::umask(old);
    let listener = listener.with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn answer(roots: Roots, req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.uri().path().trim_start_matches('/').to_string();
    let reply =
        match read_body(req).await {
            Ok(body) => tokio::task::spawn_blocking(move || handlers::handle(&roots, &method, &body))
                .await
                .unwrap_or_else(|e| handlers::Reply {
                    status: 500,
                    body: format!(r#"{{"Err":"netpath: the call failed: {}"}}"#, e.to_string().replace('"', "'"))
                        .into_bytes(),
                }),
            Err(e) => handlers::Reply { status: 400, body: format!(r#"{{"Err":"netpath: {e}"}}"#).into_bytes() },
        };
    let response = Response::builder()
        .status(reply.status)
        .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
        .body(Full::new(Bytes::from(reply.body)))
        .expect("valid response");
    Ok(response)
}

async fn read_body(req: Request<hyper::body::Incoming>) -> Result<Vec<u8>, String> {
    let body = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) => Err(format!("reading the request: {e}")),
    }
}

/// The socket path `--socket` names, made absolute.
pub fn socket_path(given: &Path) -> PathBuf {
    if given.is_absolute() { given.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(given) }
}
