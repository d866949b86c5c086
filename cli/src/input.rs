//! Loading input paths for every subcommand: runs the front end with a progress spinner when it takes
//! more than a second on a terminal, prints diagnostics (text like rustc, or JSON), and says whether
//! errors were found.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use ciliumc_compiler::frontend::{self, Diagnostic, LoadOptions, LoadResult};
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum DiagFormat {
    #[default]
    Text,
    Json,
}

/// Loads `paths`; diagnostics are printed to stderr (text) or stdout (json) by `report`.
pub fn load(paths: &[PathBuf], strict: bool) -> LoadResult {
    let options = LoadOptions {
        strict,
        ..LoadOptions::default()
    };
    with_progress("parsing inputs", || frontend::load_with(paths, &options))
}

/// Runs `work`, showing a spinner on stderr if it is a terminal and the work exceeds one second.
pub fn with_progress<T>(message: &'static str, work: impl FnOnce() -> T) -> T {
    if !std::io::stderr().is_terminal() {
        return work();
    }
    let bar = indicatif::ProgressBar::hidden();
    bar.set_message(message);
    let shown = bar.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watcher = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(1)).is_err() {
            shown.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            shown.set_style(indicatif::ProgressStyle::default_spinner());
            shown.enable_steady_tick(Duration::from_millis(100));
            let _ = done_rx.recv();
            shown.finish_and_clear();
        }
    });
    let out = work();
    let _ = done_tx.send(());
    let _ = watcher.join();
    bar.finish_and_clear();
    out
}

/// Prints every diagnostic; text goes to stderr with source excerpts.
pub fn report(result: &LoadResult, format: DiagFormat) {
    match format {
        DiagFormat::Text => {
            for d in &result.diagnostics {
                eprintln!("{}", render(d, result));
            }
            let (e, w) = (result.error_count(), result.warning_count());
            if e + w > 0 {
                eprintln!("{e} error(s), {w} warning(s)");
            }
        }
        DiagFormat::Json => {
            let doc = serde_json::json!({
                "diagnostics": result.diagnostics,
                "errors": result.error_count(),
                "warnings": result.warning_count(),
                "objects": result.objects.len(),
            });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
    }
}

fn render(d: &Diagnostic, result: &LoadResult) -> String {
    frontend::render_text(d, result.source(&d.file).unwrap_or(""))
}

/// sha256 over the normalized inputs: every object as canonical JSON, sorted by kind, namespace
/// and name, so file order, formatting and comments do not change it.
pub fn inputs_digest(result: &LoadResult) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let mut docs = Vec::with_capacity(result.objects.len());
    for o in &result.objects {
        let key = (
            o.kind.as_str().to_string(),
            o.namespace.clone().unwrap_or_default(),
            o.name.clone(),
        );
        docs.push((key, serde_json::to_string(&o.object)?));
    }
    docs.sort();
    let mut h = Sha256::new();
    for (_, d) in &docs {
        h.update(d.as_bytes());
        h.update(b"\n");
    }
    Ok(hex::encode(h.finalize()))
}
