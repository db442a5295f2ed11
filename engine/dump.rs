//! segment-dump support: filled in below.
