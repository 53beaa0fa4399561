//! Gateway-wide counters and the per-packet processing-time histogram, rendered as
//! Prometheus text on `GET /metrics`.
//!
//! Owns: the metric names and their meaning.
//! Must never: take a lock or allocate on the media path (plain relaxed atomics only), or
//! carry a label whose value could hold a digit (labels here are fixed strings).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::sinks::SinkStats;
use crate::rtp::LegStats;

/// Upper bounds of the processing-time histogram buckets, µs.
pub const TIME_BUCKETS_US: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0, 20000.0,
];

/// Counters of the whole gateway.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Calls created since start.
    pub calls_created: AtomicU64,
    /// Calls ended since start.
    pub calls_ended: AtomicU64,
    /// Calls ended because the caller stopped sending.
    pub calls_timed_out: AtomicU64,
    /// Calls refused (limit, no ports).
    pub calls_refused: AtomicU64,
    /// RTP packets received from callers.
    pub caller_packets: AtomicU64,
    /// RTP packets sent downstream (masked).
    pub downstream_packets: AtomicU64,
    /// RTP packets relayed from downstream back to callers.
    pub return_packets: AtomicU64,
    /// RTCP packets relayed (both directions).
    pub rtcp_packets: AtomicU64,
    /// Datagrams dropped because they came from an address that is not the call's peer on
    /// that side (injected or stray traffic).
    pub foreign_packets: AtomicU64,
    /// RTCP compounds that did not validate (relayed as they came, SSRCs not rewritten).
    pub rtcp_invalid: AtomicU64,
    /// RTCP sender reports the gateway sent of its own: downstream, for callers that send
    /// none; callers, about a return stream it re-encodes, when downstream sends none.
    pub rtcp_reports_sent: AtomicU64,
    /// RTCP receiver reports the gateway sent callers of its own (when downstream sends none).
    pub rtcp_receiver_reports_sent: AtomicU64,
    /// Audio frames through the masker.
    pub frames: AtomicU64,
    /// Caller packets lost (concealed with silence).
    pub lost: AtomicU64,
    /// Late or duplicate caller packets dropped.
    pub late_or_duplicate: AtomicU64,
    /// Malformed packets or unknown payload types dropped.
    pub malformed: AtomicU64,
    /// RFC 4733 telephone-event packets consumed.
    pub telephone_event_packets: AtomicU64,
    /// Silence packets synthesised (loss, telephone events).
    pub filled_frames: AtomicU64,
    /// Opus to Opus: caller packets forwarded unchanged.
    pub opus_forwarded: AtomicU64,
    /// Opus to Opus: caller packets replaced by our own encoding.
    pub opus_reencoded: AtomicU64,
    /// Tones masked (`tone_masked` events).
    pub tones_masked: AtomicU64,
    /// Digits captured (any source).
    pub digits: AtomicU64,
    /// Capture windows opened.
    pub capture_windows: AtomicU64,
    /// UDP send failures.
    pub send_errors: AtomicU64,
    /// Events a slow event-stream subscriber missed.
    pub events_lagged: AtomicU64,
    /// WHIP sessions answered.
    pub whip_sessions: AtomicU64,
    /// WHIP offers refused (bad SDP, no Opus, negotiation failure).
    pub whip_refused: AtomicU64,
    /// Received WebRTC packets dropped because the call fell behind.
    pub whip_dropped: AtomicU64,
    /// Histogram of time spent in the core per caller packet.
    pub process_time: Histogram,
    /// Sink counters (shared with every call's sinks).
    pub sinks: std::sync::Arc<SinkStats>,
}

/// A fixed-bucket histogram of microseconds, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; TIME_BUCKETS_US.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Add a call's local observations and clear them.
    pub fn merge(&self, local: &mut LocalHistogram) {
        for (b, l) in self.buckets.iter().zip(&local.buckets) {
            add(b, *l);
        }
        add(&self.count, local.count);
        add(&self.sum_ns, local.sum_ns);
        *local = LocalHistogram::default();
    }
}

/// One call's share of [`Histogram`], kept without atomics and merged now and then, so the
/// per-packet path touches no cache line another core writes.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalHistogram {
    buckets: [u64; TIME_BUCKETS_US.len()],
    count: u64,
    sum_ns: u64,
}

impl LocalHistogram {
    /// Record one observation of `ns` nanoseconds.
    pub fn observe_ns(&mut self, ns: u64) {
        let us = ns as f64 / 1000.0;
        if let Some(i) = TIME_BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_ns += ns;
    }
}

fn add(c: &AtomicU64, v: u64) {
    if v != 0 {
        c.fetch_add(v, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Add what a leg counted since `before` to the totals.
    pub fn add_leg_delta(&self, before: &LegStats, now: &LegStats) {
        add(
            &self.caller_packets,
            now.packets_in.saturating_sub(before.packets_in),
        );
        add(
            &self.downstream_packets,
            now.packets_out.saturating_sub(before.packets_out),
        );
        add(
            &self.frames,
            now.audio_frames.saturating_sub(before.audio_frames),
        );
        add(&self.lost, now.lost.saturating_sub(before.lost));
        add(
            &self.late_or_duplicate,
            (now.late + now.duplicate).saturating_sub(before.late + before.duplicate),
        );
        add(
            &self.malformed,
            (now.malformed + now.unknown_pt + now.decode_errors)
                .saturating_sub(before.malformed + before.unknown_pt + before.decode_errors),
        );
        add(
            &self.telephone_event_packets,
            now.telephone_event_packets
                .saturating_sub(before.telephone_event_packets),
        );
        add(
            &self.filled_frames,
            now.filled_frames.saturating_sub(before.filled_frames),
        );
        add(
            &self.opus_forwarded,
            now.forwarded.saturating_sub(before.forwarded),
        );
        add(
            &self.opus_reencoded,
            now.reencoded.saturating_sub(before.reencoded),
        );
    }

    /// Prometheus text exposition (version 0.0.4).
    pub fn render(&self, active_calls: usize) -> String {
        let mut s = String::with_capacity(4096);
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counter = |s: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let _ = writeln!(
            s,
            "# HELP tonewall_calls_active Calls in progress.\n# TYPE tonewall_calls_active gauge\ntonewall_calls_active {active_calls}"
        );
        counter(
            &mut s,
            "tonewall_calls_created_total",
            "Calls created.",
            g(&self.calls_created),
        );
        counter(
            &mut s,
            "tonewall_calls_ended_total",
            "Calls ended.",
            g(&self.calls_ended),
        );
        counter(
            &mut s,
            "tonewall_calls_media_timeout_total",
            "Calls ended because the caller stopped sending.",
            g(&self.calls_timed_out),
        );
        counter(
            &mut s,
            "tonewall_calls_refused_total",
            "Call requests refused.",
            g(&self.calls_refused),
        );
        counter(
            &mut s,
            "tonewall_foreign_packets_total",
            "RTP and RTCP datagrams dropped because they came from an address that is not the call's peer on that side.",
            g(&self.foreign_packets),
        );
        counter(
            &mut s,
            "tonewall_whip_sessions_total",
            "WHIP publish sessions answered.",
            g(&self.whip_sessions),
        );
        counter(
            &mut s,
            "tonewall_whip_refused_total",
            "WHIP offers refused.",
            g(&self.whip_refused),
        );
        counter(
            &mut s,
            "tonewall_whip_dropped_packets_total",
            "WebRTC packets dropped because a call fell behind.",
            g(&self.whip_dropped),
        );
        counter(
            &mut s,
            "tonewall_caller_packets_total",
            "RTP packets received from callers.",
            g(&self.caller_packets),
        );
        counter(
            &mut s,
            "tonewall_downstream_packets_total",
            "Masked RTP packets sent downstream.",
            g(&self.downstream_packets),
        );
        counter(
            &mut s,
            "tonewall_return_packets_total",
            "RTP packets relayed from downstream to callers.",
            g(&self.return_packets),
        );
        counter(
            &mut s,
            "tonewall_rtcp_packets_total",
            "RTCP packets relayed.",
            g(&self.rtcp_packets),
        );
        counter(
            &mut s,
            "tonewall_rtcp_invalid_total",
            "RTCP compounds that did not validate, relayed without SSRC rewriting.",
            g(&self.rtcp_invalid),
        );
        counter(
            &mut s,
            "tonewall_rtcp_reports_sent_total",
            "RTCP sender reports the gateway sent of its own: downstream, for callers that send no RTCP; callers, about a return stream it re-encodes, when downstream sends no RTCP.",
            g(&self.rtcp_reports_sent),
        );
        counter(
            &mut s,
            "tonewall_rtcp_receiver_reports_sent_total",
            "RTCP receiver reports the gateway sent callers of its own, about their streams, when downstream sends no RTCP.",
            g(&self.rtcp_receiver_reports_sent),
        );
        counter(
            &mut s,
            "tonewall_frames_total",
            "Audio frames through the masker.",
            g(&self.frames),
        );
        counter(
            &mut s,
            "tonewall_packets_lost_total",
            "Caller packets lost and concealed with silence.",
            g(&self.lost),
        );
        counter(
            &mut s,
            "tonewall_packets_late_or_duplicate_total",
            "Late or duplicate caller packets dropped.",
            g(&self.late_or_duplicate),
        );
        counter(
            &mut s,
            "tonewall_packets_malformed_total",
            "Malformed packets or unknown payload types dropped.",
            g(&self.malformed),
        );
        counter(
            &mut s,
            "tonewall_opus_packets_forwarded_total",
            "Opus caller packets sent downstream unchanged (nothing in them was masked).",
            g(&self.opus_forwarded),
        );
        counter(
            &mut s,
            "tonewall_opus_packets_reencoded_total",
            "Opus caller packets replaced downstream by tonewall's own encoding.",
            g(&self.opus_reencoded),
        );
        counter(
            &mut s,
            "tonewall_telephone_event_packets_total",
            "RFC 4733 packets consumed (never forwarded).",
            g(&self.telephone_event_packets),
        );
        counter(
            &mut s,
            "tonewall_filled_frames_total",
            "Silence packets synthesised to keep the downstream stream continuous.",
            g(&self.filled_frames),
        );
        counter(
            &mut s,
            "tonewall_tones_masked_total",
            "Tone spans masked.",
            g(&self.tones_masked),
        );
        counter(
            &mut s,
            "tonewall_digits_total",
            "Digits captured (values go to the secure sink only).",
            g(&self.digits),
        );
        counter(
            &mut s,
            "tonewall_capture_windows_total",
            "Capture windows opened.",
            g(&self.capture_windows),
        );
        counter(
            &mut s,
            "tonewall_send_errors_total",
            "UDP send failures.",
            g(&self.send_errors),
        );
        counter(
            &mut s,
            "tonewall_events_lagged_total",
            "Events a slow event-stream subscriber missed.",
            g(&self.events_lagged),
        );
        let k = &self.sinks;
        let _ = writeln!(s, "# HELP tonewall_sink_errors_total Sink deliveries that failed for good.\n# TYPE tonewall_sink_errors_total counter");
        for (sink, v) in [
            ("recorder", g(&k.recorder_errors)),
            ("stt", g(&k.stt_errors)),
            ("webhook", g(&k.webhook_errors)),
            ("secure", g(&k.secure_errors)),
        ] {
            let _ = writeln!(s, "tonewall_sink_errors_total{{sink=\"{sink}\"}} {v}");
        }
        let _ = writeln!(s, "# HELP tonewall_sink_dropped_total Frames a sink's queue had no room for.\n# TYPE tonewall_sink_dropped_total counter");
        for (sink, v) in [
            ("recorder", g(&k.recorder_dropped)),
            ("stt", g(&k.stt_dropped)),
        ] {
            let _ = writeln!(s, "tonewall_sink_dropped_total{{sink=\"{sink}\"}} {v}");
        }
        let _ = writeln!(s, "# HELP tonewall_sink_delivered_total Sink deliveries that succeeded.\n# TYPE tonewall_sink_delivered_total counter");
        for (sink, v) in [
            ("webhook", g(&k.webhook_delivered)),
            ("secure", g(&k.secure_delivered)),
        ] {
            let _ = writeln!(s, "tonewall_sink_delivered_total{{sink=\"{sink}\"}} {v}");
        }
        let h = &self.process_time;
        let _ = writeln!(
            s,
            "# HELP tonewall_packet_processing_seconds Time in the masking core per caller packet.\n# TYPE tonewall_packet_processing_seconds histogram"
        );
        let mut cum = 0;
        for (b, c) in TIME_BUCKETS_US.iter().zip(&h.buckets) {
            cum += g(c);
            let _ = writeln!(
                s,
                "tonewall_packet_processing_seconds_bucket{{le=\"{}\"}} {cum}",
                b / 1e6
            );
        }
        let count = g(&h.count);
        let _ = writeln!(
            s,
            "tonewall_packet_processing_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            s,
            "tonewall_packet_processing_seconds_sum {}\ntonewall_packet_processing_seconds_count {count}",
            g(&h.sum_ns) as f64 / 1e9
        );
        if let Some((cpu, rss)) = process_usage() {
            let _ = writeln!(s, "# HELP process_cpu_seconds_total User and system CPU time of the gateway.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}");
            let _ = writeln!(s, "# HELP process_resident_memory_bytes Resident memory of the gateway.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}");
        }
        s
    }
}

/// CPU seconds and resident bytes of this process, from `/proc/self/stat` (Linux only).
pub fn process_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); utime = field 14, stime = 15, rss = 24 (pages).
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let rss: u64 = f.get(21)?.parse().ok()?;
    // USER_HZ is 100 on every Linux target we build for; page size 4 KiB.
    Some(((utime + stime) / 100.0, rss * 4096))
}
