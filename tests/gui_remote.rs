//! The app attached to a running server: its panels show and steer that
//! server's engine (egui_kittest, real HTTP on loopback).

mod common;

use std::time::{Duration, Instant};

use common::app::step_until;
use common::*;
use eframe::egui;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use modeldock::catalog::registry::Registry;
use modeldock::client::{Client, HttpClient, LateWake, RemoteEngine};
use modeldock::engine::{Engine, ModelState};
use modeldock::server::{self, ServerOptions};
use modeldock::ui::app::{AppOptions, ModeldockApp};
use modeldock::ui::log_capture::LogBuffer;

#[test]
fn a_model_loaded_through_the_server_shows_resident_and_unload_in_the_panel_unloads_it_there() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "remote-toy", &[]);
    let reg = Registry::discover(&[dir.path().to_path_buf()]);
    let engine = Engine::start(reg.clone(), config(), None);
    let listener =
        server::bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"));
    let handle = server::start(engine.clone(), ServerOptions::default(), listener).unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{}", handle.addr);

    let app_base = base.clone();
    let mut h = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_eframe(move |cc| {
            let wake = LateWake::default();
            let remote = RemoteEngine::start(HttpClient::new(&app_base), Some(wake.as_wake()));
            ModeldockApp::new(
                cc,
                AppOptions {
                    client: Client::remote(remote),
                    wake,
                    problems: Vec::new(),
                    open: Vec::new(),
                    model: Some("remote-toy".into()),
                    telemetry: false,
                    log: LogBuffer::default(),
                    live: None,
                    exit_after: None,
                },
            )
        });
    step_until(&mut h, "the server's models", |h| {
        h.query_all_by_label("Available").next().is_some()
    });
    assert!(
        h.query_by_label_contains(&base).is_some(),
        "the status bar names the server"
    );

    // Another client loads the model on the server; the panel follows.
    HttpClient::new(&base)
        .load("remote-toy", None, false, true)
        .unwrap_or_else(|e| panic!("{e}"));
    step_until(&mut h, "the row to read Resident", |h| {
        h.query_all_by_label("Resident").next().is_some()
    });

    // Unload in the panel unloads it on the server.
    h.get_by_label("Unload").click();
    let end = Instant::now() + WAIT;
    while engine.status("remote-toy").map(|m| m.state) != Some(ModelState::Available) {
        assert!(Instant::now() < end, "the server never unloaded it");
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    step_until(&mut h, "the row to read Available", |h| {
        h.query_all_by_label("Available").next().is_some()
    });
    drop(h);
    handle.shutdown();
    engine.shutdown();
}
