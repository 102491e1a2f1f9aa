//! Elle-style transactional anomaly checking (list-append, rw-register). Nothing here yet.
