// placeholder
struct P { n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@compute @workgroup_size(1)
fn placeholder() { _ = p.n; }
