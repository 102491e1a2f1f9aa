//! Linearizability checking (Wing-Gong/Lowe search with P-compositionality and state caching).
//! Nothing here yet.
