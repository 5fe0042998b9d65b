//! A worker thread that keeps a fleet and answers only the newest job: the console's pattern
//! for work too slow for a frame that runs again as the user types (scoring a finding,
//! planning a release). Jobs queue without blocking; when several are waiting, the thread
//! takes the newest fleet and the newest job and drops the rest, so a burst of keystrokes
//! costs one run, not one per key. Answers come back tagged with the job's sequence number,
//! and the thread asks egui for a repaint when one lands.

use convoy_core::fleet::Fleet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

/// Runs `job` once on a thread named `name`: its answer arrives on the returned channel, and
/// egui is asked to repaint when it does (the view polls the channel once per frame). `Err`
/// when the thread could not start. The view may be gone when the answer comes: then nobody
/// waits for it.
pub fn spawn_job<T: Send + 'static>(
    ctx: &egui::Context,
    name: &str,
    job: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<Receiver<T>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let ctx = ctx.clone();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = tx.send(job());
            ctx.request_repaint();
        })
        .map(|_| rx)
}

/// Jobs that may wait before `send` reports the queue full (then the caller tries again next
/// frame).
const QUEUE: usize = 8;

enum Message<J> {
    Fleet(Arc<Fleet>),
    Job(u64, J),
}

/// The UI's end of a newest-job-wins worker with jobs `J` and answers `A`.
pub struct FleetWorker<J, A> {
    tx: SyncSender<Message<J>>,
    rx: Receiver<(u64, A)>,
}

impl<J, A> std::fmt::Debug for FleetWorker<J, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetWorker")
    }
}

impl<J: Send + 'static, A: Send + 'static> FleetWorker<J, A> {
    /// Starts the thread `name`, which answers each newest job with `run(job, fleet)` once it
    /// has a fleet (jobs sent before the first fleet wait for it).
    pub fn spawn(
        name: &str,
        ctx: &egui::Context,
        run: impl Fn(J, &Arc<Fleet>) -> A + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, requests) = std::sync::mpsc::sync_channel::<Message<J>>(QUEUE);
        let (answers, rx) = std::sync::mpsc::sync_channel(2);
        let ctx = ctx.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut fleet: Option<Arc<Fleet>> = None;
                let mut waiting: Option<(u64, J)> = None;
                while let Ok(first) = requests.recv() {
                    // Take everything queued: the newest fleet and the newest job win.
                    for message in std::iter::once(first).chain(requests.try_iter()) {
                        match message {
                            Message::Fleet(f) => fleet = Some(f),
                            Message::Job(seq, job) => waiting = Some((seq, job)),
                        }
                    }
                    let Some(fleet) = &fleet else {
                        continue;
                    };
                    let Some((seq, job)) = waiting.take() else {
                        continue;
                    };
                    if answers.send((seq, run(job, fleet))).is_err() {
                        return;
                    }
                    ctx.request_repaint();
                }
            })?;
        Ok(Self { tx, rx })
    }

    /// Gives the worker the fleet to work on from now on. False if the queue is full (try
    /// again next frame) or the thread has stopped.
    pub fn send_fleet(&self, fleet: Arc<Fleet>) -> bool {
        self.tx.try_send(Message::Fleet(fleet)).is_ok()
    }

    /// Queues job `seq`; false if the queue is full (try again next frame) or the thread has
    /// stopped.
    pub fn send(&self, seq: u64, job: J) -> bool {
        self.tx.try_send(Message::Job(seq, job)).is_ok()
    }

    /// Waits up to `timeout` for the next answer (tests; the UI never waits).
    pub fn wait(&self, timeout: std::time::Duration) -> Option<(u64, A)> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The answers that have landed since the last call, oldest first.
    pub fn answers(&self) -> impl Iterator<Item = (u64, A)> + '_ {
        self.rx.try_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_core::synth::{SynthOptions, generate};
    use convoy_core::time::Timestamp;
    use std::time::{Duration, Instant};

    #[test]
    fn a_job_waits_for_the_fleet_and_only_the_newest_queued_job_is_run() {
        let ctx = egui::Context::default();
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(gate_rx);
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let started = std::sync::Mutex::new(started_tx);
        let worker = FleetWorker::spawn("test-worker", &ctx, move |job: u64, fleet| {
            // The first job says it started, then blocks until the test has queued more behind
            // it.
            if job == 1 {
                let _ = started.lock().map(|s| s.send(()));
                let _ = gate.lock().map(|g| g.recv());
            }
            (job, fleet.len())
        })
        .expect("spawn");
        assert!(worker.send(1, 1), "queued before any fleet");
        let fleet = Arc::new(generate(&SynthOptions {
            devices: 30,
            seed: 1,
            now: Timestamp::from_secs(1_800_000_000),
        }));
        assert!(worker.send_fleet(Arc::clone(&fleet)));
        // Once the thread runs job 1, queue three behind it.
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("job 1 never started");
        assert!(worker.send(2, 2));
        assert!(worker.send(3, 3));
        assert!(worker.send(4, 4));
        gate_tx.send(()).expect("release job 1");
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < 2 && Instant::now() < deadline {
            got.extend(worker.answers());
            // A poll interval, not synchronisation: the answers are what is waited for.
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            got,
            vec![(1, (1, 30)), (4, (4, 30))],
            "2 and 3 were dropped"
        );
    }
}
