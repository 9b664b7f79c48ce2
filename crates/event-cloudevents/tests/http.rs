//! HTTP binding tests (filled below).
