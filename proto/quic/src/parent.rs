//! Servers started by `quip-testnet up` stop with it, however it ends.

/// Set by `quip-testnet up` for its children: stdin is then a pipe from the parent, and its
/// end — the parent gone, however it ended, even by SIGKILL — stops this process as SIGTERM
/// would (and exits it outright if the graceful stop takes longer than 10 s).
pub const STOP_WITH_PARENT: &str = "QUIP_STOP_WITH_PARENT";

/// Returns when stdin ends, if [`STOP_WITH_PARENT`] is set; never otherwise.
pub async fn parent_gone() {
    if std::env::var_os(STOP_WITH_PARENT).is_none() {
        return std::future::pending().await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = tx.send(());
        std::thread::sleep(std::time::Duration::from_secs(10));
        std::process::exit(1);
    });
    let _ = rx.await;
}
