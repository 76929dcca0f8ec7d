//! The app's own tracing events, kept for the Log panel.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

#[derive(Debug, Clone)]
pub struct LogLine {
    pub level: Level,
    pub text: String,
    pub at: std::time::SystemTime,
}

/// A bounded, shared buffer of log lines.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<VecDeque<LogLine>>>);

const KEEP: usize = 2000;

impl LogBuffer {
    pub fn push(&self, level: Level, text: String) {
        let mut v = match self.0.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        v.push_back(LogLine {
            level,
            text,
            at: std::time::SystemTime::now(),
        });
        while v.len() > KEEP {
            v.pop_front();
        }
    }

    /// Lines at `max` or more severe, oldest first.
    pub fn lines(&self, max: Level) -> Vec<LogLine> {
        let v = match self.0.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        v.iter().filter(|l| l.level <= max).cloned().collect()
    }
}

/// A tracing layer that copies events into a [`LogBuffer`].
pub struct CaptureLayer(pub LogBuffer);

struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        self.0.push(*event.metadata().level(), m.0);
    }
}
