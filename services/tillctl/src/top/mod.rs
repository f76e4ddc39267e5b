//! `tillctl top`: a live terminal view of a running pipeline, drawn from the services' `/metrics`.
//!
//! # Layout
//! - [`exposition`]: the Prometheus text format, read into samples.
//! - [`view`]: pure — two scrapes in, one frame of text out (what each part of the frame means is
//!   documented there and in `docs/live-view.md`).
//! - this file: the I/O — scrape every endpoint, draw, wait, until Ctrl-C or `frames` frames.
//!
//! A service that does not answer is named in the frame's header and its rows show dashes; the
//! view never exits because a service is down (that is when an operator needs it).

pub mod exposition;
pub mod view;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use exposition::Samples;
use view::{Endpoint, Inputs};

/// How frames reach the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// Clear the terminal and draw each frame in place (an interactive terminal).
    Redraw,
    /// Print frames one after another, separated by a rule (a log, a pipe, a test).
    Append,
}

/// What `tillctl top` watches and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The services' metrics URLs (`http://host:port/metrics`).
    pub endpoints: Vec<String>,
    /// Time between two scrapes: each frame's rates are measured over it.
    pub every: Duration,
    /// Stop after this many frames (`None`: until Ctrl-C).
    pub frames: Option<u64>,
    pub screen: Screen,
    /// A file whose last line is shown as the fleet's status (`scripts/run` writes it).
    pub status_file: Option<PathBuf>,
    /// How many stores the store table shows.
    pub store_rows: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("no metrics endpoint to watch")]
    NoEndpoints,
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("writing the view: {0}")]
    Write(#[from] std::io::Error),
}

/// Draw frames until Ctrl-C (or `frames` frames). Returns after a clean stop.
pub async fn run(opts: Options, out: &mut dyn Write) -> Result<(), TopError> {
    if opts.endpoints.is_empty() {
        return Err(TopError::NoEndpoints);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()?;
    let (mut previous, _) = scrape(&client, &opts.endpoints).await;
    let mut taken = Instant::now();
    let mut drawn = 0u64;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            _ = tokio::time::sleep(opts.every) => {}
        }
        let (current, endpoints) = scrape(&client, &opts.endpoints).await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let frame = view::render(&Inputs {
            previous: &previous,
            current: &current,
            elapsed_s: taken.elapsed().as_secs_f64(),
            now_epoch_s: now.as_secs_f64(),
            clock: utc_clock(now),
            endpoints: &endpoints,
            fleet_status: opts.status_file.as_ref().and_then(|p| last_line(p)),
            store_rows: opts.store_rows,
        });
        taken = Instant::now();
        match opts.screen {
            // Home, clear: the frame replaces the last one, and stays on screen after the stop.
            Screen::Redraw => write!(out, "\x1b[H\x1b[2J{frame}")?,
            Screen::Append => write!(out, "{}\n{frame}", "-".repeat(78))?,
        }
        out.flush()?;
        previous = current;
        drawn += 1;
        if opts.frames.is_some_and(|n| drawn >= n) {
            return Ok(());
        }
    }
}

/// Every endpoint's samples together, and which endpoints answered.
async fn scrape(client: &reqwest::Client, urls: &[String]) -> (Samples, Vec<Endpoint>) {
    let mut samples = Samples::default();
    let mut endpoints = Vec::with_capacity(urls.len());
    for url in urls {
        let answer = async {
            let resp = client.get(url).send().await?.error_for_status()?;
            resp.text().await
        }
        .await;
        let error = match answer {
            Ok(text) => {
                samples.add_exposition(&text);
                None
            }
            Err(e) => Some(short_reason(&e)),
        };
        endpoints.push(Endpoint {
            url: url.clone(),
            error,
        });
    }
    (samples, endpoints)
}

/// Why a scrape failed, in a few words (reqwest's full chain is too long for a header line).
fn short_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "not listening".to_string()
    } else if let Some(status) = e.status() {
        format!("HTTP {status}")
    } else {
        e.to_string()
    }
}

/// The last non-empty line of a status file (`None` while it does not exist).
fn last_line(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// `HH:MM:SS UTC` of a time since the epoch.
fn utc_clock(since_epoch: Duration) -> String {
    let s = since_epoch.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3_600, s % 3_600 / 60, s % 60)
}
