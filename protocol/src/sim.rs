//! Virtual-time simulator (filled in below).
