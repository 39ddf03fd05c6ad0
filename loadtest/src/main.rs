//! clicktrail-load: the SREs' open-loop load generator with coordinated-omission-corrected
//! HDR latency. The crate exists so the workspace has its final shape; the generator itself
//! is its own issue (it drives the click edge and the conversion API, which come first).

fn main() {
    eprintln!("clicktrail-load is not built yet; see the load generator issue");
    std::process::exit(2);
}
