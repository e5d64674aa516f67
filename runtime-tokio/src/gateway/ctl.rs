//! `hypergate ctl`: the operator's command line over the gateway's `/api/` routes.
//!
//! Contract: each subcommand is one HTTP call to the gateway (bearer token from a file or
//! `HYPERGATE_ADMIN_TOKEN_FILE`); `--json` prints the gateway's JSON answer as is, otherwise
//! a short table. Exit status 0 on a 2xx answer, 1 when the gateway is unreachable or
//! answers an error (its `{error}` goes to stderr), 2 on bad usage (clap).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of `hypergate ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The gateway's base URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "HYPERGATE_GATEWAY_URL",
        global = true
    )]
    pub gateway: String,
    /// A file holding the admin bearer token.
    #[arg(long, env = "HYPERGATE_ADMIN_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Print the gateway's JSON answer.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The operator commands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Active leases held by the gateway.
    Leases,
    /// Mirrored cores per relay, with lag and pending flags.
    Replicas,
    /// Registered relays, their workers and pending writes.
    Relays,
    /// Revoke every escrow deposit of a relay and end the gateway's lease of it.
    Revoke {
        /// The relay key (hex).
        relay: String,
        /// Why (recorded in the escrow's audit log).
        #[arg(long, default_value = "operator-revoke")]
        reason: String,
    },
    /// Ask the escrow for a relay's lease now (its policy decides).
    RequestLease {
        /// The relay key (hex).
        relay: String,
    },
    /// Forget a relay (refused while it has pending writes unless --force).
    Remove {
        /// The relay key (hex).
        relay: String,
        /// Give up its pending writes.
        #[arg(long)]
        force: bool,
    },
}

/// Runs one `ctl` command.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let (method, path, body) = match &args.command {
        CtlCommand::Leases => ("GET", "/api/escrow/leases".to_owned(), None),
        CtlCommand::Replicas => ("GET", "/api/blind-peer/replicas".to_owned(), None),
        CtlCommand::Relays => ("GET", "/api/relays".to_owned(), None),
        CtlCommand::Revoke { relay, reason } => (
            "POST",
            format!("/api/relays/{relay}/escrow/revoke"),
            Some(json!({ "reason": reason })),
        ),
        CtlCommand::RequestLease { relay } => {
            ("POST", format!("/api/escrow/leases/{relay}/request"), None)
        }
        CtlCommand::Remove { relay, force } => (
            "DELETE",
            format!(
                "/api/relays/{relay}{}",
                if *force { "?force=true" } else { "" }
            ),
            None,
        ),
    };
    let answer = tokio::time::timeout(
        CALL_TIMEOUT,
        call(&args.gateway, method, &path, body, token.as_deref()),
    )
    .await
    .with_context(|| format!("the gateway at {} did not answer in time", args.gateway))??;
    if args.json {
        println!("{answer}");
    } else {
        print!("{}", table(&args.command, &answer));
    }
    Ok(())
}

/// One call; the JSON answer of a 2xx, else an error carrying the gateway's `{error}`.
async fn call(
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> anyhow::Result<Value> {
    let Some(rest) = base.strip_prefix("http://") else {
        bail!("{base}: only http://host:port URLs are supported");
    };
    let authority = rest.trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("the gateway at {base} is unreachable"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("the gateway at {base} is unreachable"))?;
    let connection = tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority);
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let response = sender.send_request(request.body(Full::new(body))?).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    connection.abort();
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = json["error"].as_str().unwrap_or("no detail");
        bail!("the gateway answered {status}: {message}");
    }
    Ok(json)
}

fn table(command: &CtlCommand, answer: &Value) -> String {
    let rows = |key: &str| answer[key].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    match command {
        CtlCommand::Leases => {
            out.push_str("LEASE                                                                      EXPIRES IN\n");
            for lease in rows("leases") {
                out.push_str(&format!(
                    "{:<74} {} s\n",
                    lease["leaseId"].as_str().unwrap_or("?"),
                    lease["expiresInMs"].as_u64().unwrap_or(0) / 1000
                ));
            }
        }
        CtlCommand::Replicas => {
            for relay in rows("replicas") {
                out.push_str(&format!(
                    "relay {}  pending={}\n",
                    relay["relayKey"].as_str().unwrap_or("?"),
                    relay["gatewayPendingWrites"]
                ));
                for core in relay["cores"].as_array().cloned().unwrap_or_default() {
                    out.push_str(&format!(
                        "  {:<14} {}  {}/{} blocks  lag {} blocks, {} ms\n",
                        core["type"].as_str().unwrap_or("?"),
                        core["coreKey"].as_str().unwrap_or("?"),
                        core["localLength"],
                        core["remoteLength"],
                        core["lagBlocks"],
                        core["lagMs"]
                    ));
                }
            }
        }
        CtlCommand::Relays => {
            for relay in rows("relays") {
                out.push_str(&format!(
                    "relay {}  escrow={} pending={}\n",
                    relay["relayKey"].as_str().unwrap_or("?"),
                    relay["escrowEnabled"],
                    relay["pending"]["gatewayPendingWrites"]
                ));
                for worker in relay["workers"].as_array().cloned().unwrap_or_default() {
                    out.push_str(&format!(
                        "  worker {}  {}{}\n",
                        worker["peerKey"].as_str().unwrap_or("?"),
                        worker["health"].as_str().unwrap_or("?"),
                        if worker["linked"] == true {
                            ", linked"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        CtlCommand::Revoke { .. } | CtlCommand::RequestLease { .. } | CtlCommand::Remove { .. } => {
            out.push_str(&format!("{answer}\n"));
        }
    }
    out
}
