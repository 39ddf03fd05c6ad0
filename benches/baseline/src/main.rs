//! Bare baseline: every request gets the same static 302. No parsing, no journal, no
//! cookies: the ceiling an HTTP server on this machine reaches for a redirect.
//!
//! `clicktrail-baseline [ADDR]` (default 127.0.0.1:8090).

use may_minihttp::{HttpServer, HttpService, Request, Response};
use std::io;

#[derive(Clone)]
struct Redirect;

impl HttpService for Redirect {
    fn call(&mut self, _req: Request, res: &mut Response) -> io::Result<()> {
        res.status_code(302, "Found");
        res.header("Location: https://shop.example/landing?click_id=AQABAGsHStEVP0X0AAAAAG8Ye4Amp_m_");
        res.header("Cache-Control: no-store");
        Ok(())
    }
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8090".into());
    let server = HttpServer(Redirect).start(&addr).expect("cannot listen");
    eprintln!("baseline listening on {addr}");
    server.join().unwrap();
}
