//! Every log line of the test process, captured in memory so that a test can prove what never
//! appears in it ([`crate::AppBuilder::capture_logs`]).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Everything every component of this test process logged since the capture began, at every
/// level.
pub fn captured() -> String {
    let buffer = buffer().lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&buffer).into_owned()
}

fn buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

/// Installs, once, a global subscriber that writes every event at TRACE (the AMQP client's
/// frame-level chatter aside) into [`captured`], as `RUST_LOG=trace` would to a terminal.
pub fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let buffer = Arc::clone(buffer());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "trace,lapin=info,amq_protocol=info,pinky_swear=info",
            ))
            .with_ansi(false)
            .with_writer(move || CaptureWriter(Arc::clone(&buffer)))
            .try_init();
    });
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.0.lock().unwrap_or_else(|e| e.into_inner());
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
