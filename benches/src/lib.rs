//! Load scenarios and criterion benches live under `benches/`.
