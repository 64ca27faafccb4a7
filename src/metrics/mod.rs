//! Dice, Jaccard, 95HD, ASD, distance transform, connected components, resizing.
//!
//! Plain CPU code, exactly as the reference evaluates (medpy, scipy, scikit-image): see
//! `binary` for the metrics and the empty-mask rules, `edt` for the exact linear-time
//! distance transform, `components` for connected components / the largest one, `zoom` for
//! scipy's order-0 resizing. Arrays are row-major over a `dims` slice (any number of axes).

pub mod binary;
pub mod components;
pub mod edt;
pub mod zoom;

pub use binary::{
    asd, assd, border, class_mask, dice, evaluate, foreground, hausdorff, hd95, jaccard, per_class,
    percentile, surface_distances, BinaryMetrics,
};
pub use components::{label_components, largest_component, CONN_18, CONN_26, CONN_6};
pub use edt::squared_edt;
pub use zoom::{index_map, zoom_nearest, zoomed_shape};
