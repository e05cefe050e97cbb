//! Reads the updates that `serve` instances with `upstream.kind =
//! "jetstream"` publish, with a durable JetStream consumer, and prints each
//! one as `watch` does, followed by the node it came from and its stream
//! sequence:
//!
//! ```text
//! stream=task-1 state=RUNNING uuid=… attempt=0 latest=RUNNING framework=fw-1 terminal=false node=node-a seq=1
//! ```
//!
//! Each message is acknowledged to JetStream once printed, so a consumer
//! started again with the same `--durable` name goes on after the last one
//! it printed. A copy of an update (the same `Nats-Msg-Id`, published again
//! beyond JetStream's duplicate window) prints again: dedup by uuid if that
//! matters.
//!
//! ```sh
//! cargo run --example jetstream_watch -- [--nats URL[,URL…]] [--stream SUM] [--durable sum-watch] [--filter SUBJECT] [--count N]
//! ```
//!
//! `--filter` takes a subject filter such as `sum.node-a.>`; `--count N`
//! stops after N updates (exit 0).

use futures_util::StreamExt;
use prost::Message as _;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use status_update_manager::cli::watch::forward_line;
use status_update_manager::proto::status_update_manager::v1::ForwardedUpdate;

struct Args {
    nats: String,
    stream: String,
    durable: String,
    filter: String,
    count: Option<u64>,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        nats: "nats://127.0.0.1:4222".into(),
        stream: "SUM".into(),
        durable: "sum-watch".into(),
        filter: String::new(),
        count: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--nats" => args.nats = value()?,
            "--stream" => args.stream = value()?,
            "--durable" => args.durable = value()?,
            "--filter" => args.filter = value()?,
            "--count" => args.count = Some(value()?.parse().map_err(|e| format!("--count: {e}"))?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args().inspect_err(|_| {
        eprintln!(
            "usage: jetstream_watch [--nats URL[,URL…]] [--stream SUM] [--durable NAME] [--filter SUBJECT] [--count N]"
        )
    })?;
    let servers: Vec<async_nats::ServerAddr> = args
        .nats
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let client = async_nats::connect(servers).await?;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(&args.stream).await?;
    let consumer = stream
        .get_or_create_consumer(
            &args.durable,
            pull::Config {
                durable_name: Some(args.durable.clone()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                filter_subject: args.filter.clone(),
                ..Default::default()
            },
        )
        .await?;
    eprintln!(
        "watching JetStream stream {} at {} as durable consumer {:?}; Ctrl-C to stop",
        args.stream, args.nats, args.durable
    );
    let mut messages = consumer.messages().await?;
    let mut printed = 0u64;
    while let Some(message) = messages.next().await {
        let message = message?;
        let forward = ForwardedUpdate::decode(message.payload.as_ref())?;
        let node = message.subject.split('.').rev().nth(1).unwrap_or("-");
        let seq = message.info().map_or(0, |i| i.stream_sequence);
        println!("{} node={node} seq={seq}", forward_line(&forward));
        message.ack().await.map_err(|e| e.to_string())?;
        printed += 1;
        if args.count.is_some_and(|n| printed >= n) {
            break;
        }
    }
    Ok(())
}
