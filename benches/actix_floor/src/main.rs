//! actix-web answering `GET /c/{link}` with a static 302, as clicktrail's edge is set up
//! (two workers per core, mimalloc, the tracking scope first) but with no click work: no
//! parsing, no click id, no journal, no cookies. Usage: `clicktrail-actix-floor [ADDR]`.
use actix_web::{http::header, web, App, HttpResponse, HttpServer};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn redirect() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((
            header::LOCATION,
            "https://shop.example/landing?click_id=AAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ))
        .finish()
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18092".into());
    let workers = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
    HttpServer::new(|| App::new().service(web::scope("/c").default_service(web::to(redirect))))
        .workers(workers)
        .bind(addr)?
        .run()
        .await
}
