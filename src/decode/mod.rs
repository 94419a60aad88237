pub mod blocks;
pub mod policy;
