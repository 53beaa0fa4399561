//! Digit values never appear in logs, events or error messages (BRIEF 2.3). A tracing layer
//! records every log line the core emits at TRACE level while the bundled payment call runs
//! through the real pipeline; the test then looks for the card number and for any key value
//! in those lines, in the serialised events and in error messages. Only the secure digit
//! sink may hold the values, and the test checks that it does.

use std::sync::{Arc, Mutex};

use tonewall::event::{Event, Outputs, SecureDigit};
use tonewall::pipeline::{ChannelPipeline, PipelineConfig};
use tonewall::time::ChannelId;
use tonewall::wav::{Wav, WavData};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// One log record as "target level field=value ..." text, and its field names.
type Record = (String, Vec<String>);

/// Every log record the core emitted.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Record>>>);

struct Fields(String, Vec<String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0 += &format!(" {}={:?}", field.name(), value);
        self.1.push(field.name().to_string());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0 += &format!(" {}={}", field.name(), value);
        self.1.push(field.name().to_string());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let m = event.metadata();
        let mut f = Fields(format!("{} {}", m.target(), m.level()), Vec::new());
        event.record(&mut f);
        self.0.lock().unwrap().push((f.0, f.1));
    }
}

#[derive(Default)]
struct Collect {
    events: Vec<Event>,
    secure: Vec<SecureDigit>,
}

impl Outputs for Collect {
    fn event(&mut self, e: Event) {
        self.events.push(e);
    }
    fn secure_digit(&mut self, d: SecureDigit) {
        self.secure.push(d);
    }
}

#[test]
fn no_digit_value_reaches_a_log_line_an_event_or_an_error() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let wav =
        Wav::parse(&std::fs::read(format!("{dir}/sample-audio/payment-call-8k-ulaw.wav")).unwrap())
            .unwrap();
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/sample-audio/payment-call-8k-ulaw.json")).unwrap(),
    )
    .unwrap();
    let keys: String = truth["digits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digit"].as_str().unwrap())
        .collect();
    let pan = &keys[..16];
    let WavData::G711(bytes) = &wav.data else {
        panic!("fixture is mu-law")
    };

    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let mut out = Collect::default();
    tracing::subscriber::with_default(subscriber, || {
        let cfg = PipelineConfig::default();
        let mut p = ChannelPipeline::<u8>::new(cfg, ChannelId(0)).unwrap();
        let mut y = vec![0u8; bytes.len()];
        for (i, o) in bytes.chunks(160).zip(y.chunks_mut(160)) {
            p.process(i, o, &mut out);
        }
        let mut tail = vec![0u8; p.delay()];
        p.finish(&mut tail, &mut out);
    });

    // The sink got every value: the test would notice if values were simply dropped.
    let delivered: String = out
        .secure
        .iter()
        .map(|d| d.digit.expose().to_char())
        .collect();
    assert_eq!(delivered, keys);

    let logs = capture.0.lock().unwrap();
    assert!(
        logs.iter()
            .any(|(l, _)| l.contains("capture window opened")),
        "the core logged nothing; the check below would prove nothing"
    );
    assert!(logs.iter().any(|(l, _)| l.contains("key captured")));
    let events: Vec<String> = out
        .events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let errors = [
        tonewall::pipeline::PipelineError::Lookahead(99).to_string(),
        tonewall::wav::Wav::parse(b"RIFF").unwrap_err().to_string(),
        format!("{:?}", out.secure.first().unwrap()),
    ];

    // 1. The card number, or any run of six or more of its digits, appears nowhere.
    let text = logs
        .iter()
        .map(|(l, _)| l.clone())
        .chain(events.iter().cloned())
        .chain(errors.iter().cloned())
        .collect::<Vec<_>>();
    for w in pan.as_bytes().windows(6) {
        let needle = std::str::from_utf8(w).unwrap();
        for t in &text {
            assert!(!t.contains(needle), "card digits {needle} found in: {t}");
        }
    }
    // 2. No log record carries a field that could hold a key, except the redacted value.
    for (line, fields) in logs.iter() {
        for f in fields {
            assert!(
                f != "digit" && f != "pan" && f != "card",
                "field {f} in log: {line}"
            );
        }
        if line.contains("key captured") {
            assert!(
                line.contains("value=[redacted]"),
                "value not redacted: {line}"
            );
        }
    }
    // 3. No event has a field that could hold a value.
    for e in &events {
        let v: serde_json::Value = serde_json::from_str(e).unwrap();
        for k in ["digit", "value", "key", "pan"] {
            assert!(v.get(k).is_none(), "event carries {k}: {e}");
        }
    }
    // 4. Debug of what goes to the secure sink hides the value.
    assert!(errors[2].contains("[redacted]"));
    println!(
        "{} log lines, {} events, {} secure digits checked; no value outside the secure sink",
        logs.len(),
        events.len(),
        out.secure.len()
    );
}
