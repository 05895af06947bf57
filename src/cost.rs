//! Prices, so lomob can say what a run or a month costs. Defaults are 2024 list prices
//! (see DESIGN.md); a backend kind's price can be overridden per site later.

use lomob_backends::BackendConfig;
use serde::Serialize;

/// Dollars per unit for one backend as configured.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Prices {
    pub storage_gb_month: f64,
    /// PUT, COPY, POST and LIST, per 1,000.
    pub put_per_1000: f64,
    /// GET and HEAD, per 1,000.
    pub get_per_1000: f64,
}

const FREE: Prices = Prices {
    storage_gb_month: 0.0,
    put_per_1000: 0.0,
    get_per_1000: 0.0,
};

pub fn prices(c: &BackendConfig) -> Prices {
    use lomob_backends::StorageClass as C;
    let class = match c {
        BackendConfig::S3(s) => Some(s.effective_class(C::Standard)),
        BackendConfig::Glacier(g) => Some(g.class()),
        _ => None,
    };
    match c {
        BackendConfig::S3(_) | BackendConfig::Glacier(_) => match class.unwrap_or(C::Standard) {
            C::DeepArchive => Prices {
                storage_gb_month: 0.00099,
                put_per_1000: 0.05,
                get_per_1000: 0.0004,
            },
            C::Glacier => Prices {
                storage_gb_month: 0.0036,
                put_per_1000: 0.03,
                get_per_1000: 0.0004,
            },
            C::GlacierIr => Prices {
                storage_gb_month: 0.004,
                put_per_1000: 0.02,
                get_per_1000: 0.01,
            },
            _ => Prices {
                storage_gb_month: 0.023,
                put_per_1000: 0.005,
                get_per_1000: 0.0004,
            },
        },
        _ => FREE,
    }
}

/// Requests to upload one object of `size` bytes with parts of `part` bytes.
pub fn upload_requests(size: u64, part: u64) -> u64 {
    if size <= part {
        1
    } else {
        size.div_ceil(part) + 2
    }
}

pub fn request_cost(p: &Prices, puts: u64, gets: u64) -> f64 {
    p.put_per_1000 * puts as f64 / 1000.0 + p.get_per_1000 * gets as f64 / 1000.0
}
