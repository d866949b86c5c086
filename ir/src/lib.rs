//! ciliumc-ir: the data model shared by every pass.
