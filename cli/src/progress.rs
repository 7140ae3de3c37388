//! Progress bars for transfers that take more than a moment (indicatif, on stderr).

use indicatif::{ProgressBar, ProgressStyle};

/// Transfers smaller than this finish too quickly to be worth a bar.
const BAR_FROM: u64 = 1024 * 1024;

/// A progress callback that draws a bar labelled `label` once the transfer is big enough,
/// and clears it when done.
pub(crate) fn bar(label: &str) -> impl FnMut(u64, u64) + Send + Sync + 'static {
    let label = label.to_owned();
    let mut bar: Option<ProgressBar> = None;
    move |done, total| {
        if total < BAR_FROM {
            return;
        }
        let bar = bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(label.clone());
            bar
        });
        bar.set_position(done);
        if done >= total {
            bar.finish_and_clear();
        }
    }
}
