//! `convoy broker --listen ADDR`: run the embedded MQTT broker in the foreground.

use anyhow::{Context, Result};
use std::net::SocketAddr;

use crate::link::broker::EmbeddedBroker;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on, e.g. 127.0.0.1:1883 (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub listen: SocketAddr,
}

pub fn run(args: &Args) -> Result<()> {
    let broker = EmbeddedBroker::start(args.listen).context("starting the embedded MQTT broker")?;
    eprintln!(
        "embedded MQTT broker listening on {} (connect with --broker {}); stop with Ctrl-C",
        broker.addr(),
        broker.url()
    );
    // The broker runs on its own threads until the process is stopped.
    loop {
        std::thread::park();
    }
}
