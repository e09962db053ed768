//! The synthetic article catalogue: a small fashion taxonomy of our own in the
//! H&M column layout, products with colour variants, prices, weekly arrivals
//! and a power-law appeal that rises and fades after each arrival.

use std::io::Write;

use crate::util::rng::Rng;

/// Product type: number, name, product group, base price (currency units
/// before the Kaggle-like scaling), season (+1 summer, -1 winter, 0 all year),
/// garment group index, and the complementary types bought with or after it.
pub struct ProductType {
    pub no: u32,
    pub name: &'static str,
    pub group: &'static str,
    pub base_price: f64,
    pub season: f64,
    pub garment: usize,
    pub complements: &'static [usize],
}

macro_rules! pt {
    ($no:expr, $name:expr, $group:expr, $price:expr, $season:expr, $garment:expr, [$($c:expr),*]) => {
        ProductType { no: $no, name: $name, group: $group, base_price: $price, season: $season, garment: $garment, complements: &[$($c),*] }
    };
}

// Indices into this table are used in the complement lists.
pub const TYPES: &[ProductType] = &[
    pt!(
        255,
        "T-shirt",
        "Garment Upper body",
        9.99,
        0.3,
        0,
        [6, 7, 8]
    ), // 0
    pt!(
        253,
        "Vest top",
        "Garment Upper body",
        7.99,
        0.8,
        0,
        [7, 8, 9]
    ), // 1
    pt!(
        252,
        "Sweater",
        "Garment Upper body",
        29.99,
        -0.7,
        2,
        [6, 9, 24]
    ), // 2
    pt!(
        258,
        "Blouse",
        "Garment Upper body",
        24.99,
        0.1,
        4,
        [6, 8, 22]
    ), // 3
    pt!(
        259,
        "Shirt",
        "Garment Upper body",
        24.99,
        0.0,
        5,
        [6, 23, 26]
    ), // 4
    pt!(
        245,
        "Hoodie",
        "Garment Upper body",
        24.99,
        -0.3,
        1,
        [9, 23, 24]
    ), // 5
    pt!(
        272,
        "Trousers",
        "Garment Lower body",
        29.99,
        0.0,
        3,
        [0, 3, 4, 23]
    ), // 6
    pt!(
        274,
        "Shorts",
        "Garment Lower body",
        14.99,
        1.0,
        3,
        [0, 1, 25]
    ), // 7
    pt!(
        275,
        "Skirt",
        "Garment Lower body",
        19.99,
        0.4,
        6,
        [0, 3, 17]
    ), // 8
    pt!(
        273,
        "Leggings/Tights",
        "Garment Lower body",
        12.99,
        -0.2,
        1,
        [5, 2, 23]
    ), // 9
    pt!(
        265,
        "Dress",
        "Garment Full body",
        34.99,
        0.5,
        6,
        [25, 22, 20]
    ), // 10
    pt!(
        264,
        "Jumpsuit/Playsuit",
        "Garment Full body",
        29.99,
        0.6,
        6,
        [25, 22]
    ), // 11
    pt!(
        260,
        "Jacket",
        "Garment Upper body",
        49.99,
        -0.3,
        7,
        [6, 5, 21]
    ), // 12
    pt!(
        262,
        "Coat",
        "Garment Upper body",
        79.99,
        -1.0,
        7,
        [2, 21, 24]
    ), // 13
    pt!(306, "Bra", "Underwear", 17.99, 0.0, 8, [15]), // 14
    pt!(286, "Underwear bottom", "Underwear", 5.99, 0.0, 8, [14, 16]), // 15
    pt!(302, "Socks", "Socks & Tights", 4.99, 0.0, 13, [23, 9]), // 16
    pt!(304, "Tights", "Socks & Tights", 6.99, -0.6, 13, [8, 10]), // 17
    pt!(298, "Bikini top", "Swimwear", 14.99, 1.0, 10, [19]), // 18
    pt!(59, "Swimwear bottom", "Swimwear", 9.99, 1.0, 10, [18]), // 19
    pt!(66, "Bag", "Accessories", 19.99, 0.0, 11, [10, 22]), // 20
    pt!(87, "Scarf", "Accessories", 12.99, -0.8, 11, [13, 2]), // 21
    pt!(73, "Earring", "Accessories", 6.99, 0.2, 11, [10, 3]), // 22
    pt!(94, "Sneakers", "Shoes", 39.99, 0.0, 12, [16, 6, 9]), // 23
    pt!(68, "Boots", "Shoes", 59.99, -0.9, 12, [17, 13]), // 24
    pt!(71, "Sandals", "Shoes", 24.99, 1.0, 12, [7, 10]), // 25
    pt!(309, "Pyjama set", "Nightwear", 24.99, 0.0, 8, [15, 16]), // 26
    pt!(283, "Sunglasses", "Accessories", 9.99, 1.0, 11, [18, 7]), // 27
];

pub const GARMENT_GROUPS: &[(u32, &str)] = &[
    (1002, "Jersey Basic"),
    (1005, "Jersey Fancy"),
    (1003, "Knitwear"),
    (1009, "Trousers"),
    (1010, "Blouses"),
    (1011, "Shirts"),
    (1013, "Dresses Ladies"),
    (1006, "Outdoor"),
    (1017, "Under-, Nightwear"),
    (1018, "Dressed"),
    (1019, "Swimwear"),
    (1020, "Accessories"),
    (1021, "Shoes"),
    (1022, "Socks and Tights"),
];

/// Colour group: code, name, perceived colour master (id, name), perceived
/// colour value (id, name).
pub const COLOURS: &[(u32, &str, u32, &str, u32, &str)] = &[
    (9, "Black", 5, "Black", 4, "Dark"),
    (10, "White", 9, "White", 3, "Light"),
    (11, "Off White", 9, "White", 3, "Light"),
    (12, "Light Beige", 11, "Beige", 2, "Dusty Light"),
    (13, "Beige", 11, "Beige", 5, "Medium Dusty"),
    (7, "Grey", 12, "Grey", 5, "Medium Dusty"),
    (6, "Light Grey", 12, "Grey", 2, "Dusty Light"),
    (8, "Dark Grey", 12, "Grey", 4, "Dark"),
    (42, "Red", 18, "Red", 1, "Bright"),
    (43, "Dark Red", 18, "Red", 4, "Dark"),
    (52, "Pink", 4, "Pink", 7, "Medium"),
    (51, "Light Pink", 4, "Pink", 3, "Light"),
    (72, "Blue", 2, "Blue", 7, "Medium"),
    (73, "Dark Blue", 2, "Blue", 4, "Dark"),
    (71, "Light Blue", 2, "Blue", 3, "Light"),
    (62, "Green", 19, "Green", 7, "Medium"),
    (63, "Dark Green", 19, "Green", 4, "Dark"),
    (19, "Greenish Khaki", 20, "Khaki green", 5, "Medium Dusty"),
    (82, "Yellow", 8, "Yellow", 1, "Bright"),
    (32, "Orange", 6, "Orange", 1, "Bright"),
    (23, "Brown", 13, "Brown", 4, "Dark"),
    (92, "Purple", 15, "Lilac Purple", 7, "Medium"),
    (81, "Turquoise", 21, "Turquoise", 1, "Bright"),
    (3, "Gold", 14, "Metal", 1, "Bright"),
    (5, "Silver", 14, "Metal", 3, "Light"),
];

pub const APPEARANCES: &[(u32, &str)] = &[
    (1010016, "Solid"),
    (1010017, "Stripe"),
    (1010001, "All over pattern"),
    (1010010, "Melange"),
    (1010012, "Denim"),
    (1010004, "Check"),
    (1010021, "Lace"),
    (1010005, "Front print"),
    (1010008, "Dot"),
    (1010002, "Colour blocking"),
];

/// Index: code, name, index group (no, name). Taste groups lean on these.
pub const INDEXES: &[(&str, &str, u32, &str)] = &[
    ("A", "Ladieswear", 1, "Ladieswear"),
    ("B", "Lingeries/Tights", 1, "Ladieswear"),
    ("C", "Ladies Accessories", 1, "Ladieswear"),
    ("D", "Divided", 2, "Divided"),
    ("F", "Menswear", 3, "Menswear"),
    ("G", "Baby Sizes 50-98", 4, "Baby/Children"),
    ("H", "Children Sizes 92-140", 4, "Baby/Children"),
    ("S", "Sport", 26, "Sport"),
];

/// Sections: (no, name, index position).
pub const SECTIONS: &[(u32, &str, usize)] = &[
    (16, "Womens Everyday Collection", 0),
    (15, "Womens Trend", 0),
    (11, "Womens Tailoring", 0),
    (61, "Womens Lingerie", 1),
    (62, "Womens Nightwear, Socks & Tigh", 1),
    (65, "Womens Accessories", 2),
    (53, "Divided Collection", 3),
    (52, "Divided Basics", 3),
    (21, "Mens Casual", 4),
    (20, "Mens Tailoring", 4),
    (44, "Baby Essentials & Complements", 5),
    (43, "Kids Girl", 6),
    (46, "Kids Boy", 6),
    (5, "Ladies H&M Sport", 7),
    (4, "Mens Sport", 7),
];

/// One article (a colour variant of a product).
pub struct Article {
    pub id: u64,
    pub product_code: u32,
    pub product_name: String,
    pub ptype: usize,
    pub colour: usize,
    pub appearance: usize,
    pub index: usize,
    pub section: usize,
    /// Price in the Kaggle scale (currency / 590).
    pub price: f64,
    /// Day the article becomes available (may be negative: launched before the log starts).
    pub arrival: i32,
    /// Power-law appeal.
    pub appeal: f64,
    /// Days for the post-arrival interest to fall by e; evergreen basics have a floor.
    pub lifetime: f64,
    pub floor: f64,
    pub desc: String,
}

impl Article {
    /// Popularity weight on `day` (0 before arrival): novelty that decays,
    /// a floor for basics, and a seasonal factor by product type.
    pub fn weight(&self, day: i32, day_of_year: f64) -> f64 {
        if day < self.arrival {
            return 0.0;
        }
        let age = (day - self.arrival) as f64;
        let life = libm::exp(-age / self.lifetime) + self.floor;
        let season = TYPES[self.ptype].season;
        let s =
            1.0 + 0.6 * season * libm::cos(std::f64::consts::TAU * (day_of_year - 196.0) / 365.0);
        self.appeal * life * s.max(0.05)
    }

    pub fn department(&self) -> (u32, String) {
        let ty = &TYPES[self.ptype];
        let group_pos = GROUPS.iter().position(|g| *g == ty.group).unwrap_or(0);
        let no = 1000 + self.index as u32 * 100 + group_pos as u32 * 10 + (self.ptype as u32 % 3);
        let short = ty.group.trim_start_matches("Garment ");
        (no, format!("{} {}", INDEXES[self.index].1, short))
    }
}

pub const GROUPS: &[&str] = &[
    "Garment Upper body",
    "Garment Lower body",
    "Garment Full body",
    "Underwear",
    "Socks & Tights",
    "Swimwear",
    "Accessories",
    "Shoes",
    "Nightwear",
];

/// Which indexes a product type can be sold under (swimwear has no menswear
/// bikini tops, and so on); kept coarse on purpose.
fn index_allowed(ptype: usize, index: usize) -> bool {
    let ty = &TYPES[ptype];
    match INDEXES[index].0 {
        "B" => matches!(ty.group, "Underwear" | "Socks & Tights" | "Nightwear"),
        "C" => ty.group == "Accessories",
        "F" => !matches!(ptype, 1 | 3 | 8 | 10 | 11 | 14 | 17 | 18 | 22),
        "S" => matches!(ptype, 0 | 1 | 5 | 6 | 7 | 9 | 12 | 14 | 23),
        "G" | "H" => !matches!(ptype, 14 | 22 | 27),
        _ => true,
    }
}

pub struct CatalogueParams {
    pub n_articles: usize,
    pub days: i32,
    pub initial_share: f64,
    pub appeal_alpha: f64,
}

/// Generates the articles, grouped by product type so each type is one
/// contiguous range (the shopping simulator draws inside those ranges).
/// Returns the articles and, for each type, its range.
// One function on purpose: the draws happen in a fixed order from one
// stream, and that order is what makes a seed's files byte-identical;
// split across helpers it would be easy to reorder a draw unnoticed.
pub fn generate(p: &CatalogueParams, rng: &mut Rng) -> (Vec<Article>, Vec<std::ops::Range<usize>>) {
    // Products first (1-5 colour variants each), then variants.
    struct Product {
        ptype: usize,
        index: usize,
        section: usize,
        variants: usize,
        price: f64,
        arrival: i32,
        appeal: f64,
        lifetime: f64,
        floor: f64,
    }
    let mut products: Vec<Product> = Vec::new();
    let mut n = 0usize;
    let type_weights: Vec<f64> = TYPES
        .iter()
        .map(|t| match t.group {
            "Garment Upper body" => 3.0,
            "Garment Lower body" => 2.5,
            "Garment Full body" => 2.0,
            _ => 1.0,
        })
        .collect();
    while n < p.n_articles {
        let ptype = rng.weighted(&type_weights);
        let allowed: Vec<usize> = (0..INDEXES.len())
            .filter(|&i| index_allowed(ptype, i))
            .collect();
        let index = allowed[rng.below(allowed.len() as u64) as usize];
        let secs: Vec<usize> = (0..SECTIONS.len())
            .filter(|&s| SECTIONS[s].2 == index)
            .collect();
        let section = secs[rng.below(secs.len() as u64) as usize];
        let variants = (1 + rng.poisson(1.2) as usize).min(5).min(p.n_articles - n);
        let price = TYPES[ptype].base_price * rng.lognormal(0.0, 0.35);
        let arrival = if rng.chance(p.initial_share) {
            -(rng.below(240) as i32)
        } else {
            // New collections drop once a week.
            7 * (rng.below((p.days as u64).div_ceil(7)) as i32)
        };
        let appeal = rng.pareto(p.appeal_alpha);
        let (lifetime, floor) = if rng.chance(0.2) {
            (60.0, 0.35) // evergreen basic
        } else {
            (rng.lognormal(3.8, 0.5), 0.01)
        };
        products.push(Product {
            ptype,
            index,
            section,
            variants,
            price,
            arrival,
            appeal,
            lifetime,
            floor,
        });
        n += variants;
    }
    products.sort_by_key(|p| p.ptype);

    let mut codes: Vec<u32> = Vec::with_capacity(products.len());
    let mut used = std::collections::HashSet::new();
    while codes.len() < products.len() {
        let c = 100_000 + rng.below(899_999) as u32;
        if used.insert(c) {
            codes.push(c);
        }
    }

    let mut articles = Vec::with_capacity(p.n_articles);
    let mut ranges = vec![0..0; TYPES.len()];
    for (pi, p) in products.iter().enumerate() {
        let Product {
            ptype,
            index,
            section,
            variants,
            price,
            arrival,
            appeal,
            lifetime,
            floor,
        } = *p;
        let code = codes[pi];
        let appearance = rng.weighted(&[6.0, 1.5, 1.5, 1.0, 1.0, 0.7, 0.5, 1.0, 0.5, 0.3]);
        let adjective = [
            "Basic",
            "Soft",
            "Slim",
            "Relaxed",
            "Wide",
            "Cropped",
            "Long",
            "Oversized",
        ][rng.below(8) as usize];
        let product_name = format!(
            "{adjective} {} {}",
            TYPES[ptype].name.to_lowercase(),
            code % 1000
        );
        let mut colours_taken = Vec::new();
        for v in 0..variants {
            let colour = loop {
                let c = rng.below(COLOURS.len() as u64) as usize;
                if !colours_taken.contains(&c) {
                    colours_taken.push(c);
                    break c;
                }
            };
            if ranges[ptype].is_empty() {
                ranges[ptype] = articles.len()..articles.len();
            }
            let cents = (price * 100.0).round().max(99.0) / 100.0;
            let desc = if rng.chance(0.03) {
                String::new()
            } else {
                format!(
                    "{} {} in {}, {} finish",
                    adjective,
                    TYPES[ptype].name.to_lowercase(),
                    COLOURS[colour].1.to_lowercase(),
                    APPEARANCES[appearance].1.to_lowercase()
                )
            };
            articles.push(Article {
                id: code as u64 * 1000 + 1 + v as u64,
                product_code: code,
                product_name: product_name.clone(),
                ptype,
                colour,
                appearance,
                index,
                section,
                price: cents / 590.0,
                // Variants of one product arrive together but not always on day one.
                arrival: arrival
                    + if v > 0 && rng.chance(0.3) {
                        7 * (1 + rng.below(6) as i32)
                    } else {
                        0
                    },
                appeal: appeal * rng.lognormal(0.0, 0.5),
                lifetime,
                floor,
                desc,
            });
            ranges[ptype].end = articles.len();
        }
    }
    (articles, ranges)
}

/// Writes `articles.csv` in the Kaggle column order, sorted by article id.
pub fn write_csv(articles: &[Article], w: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        w,
        "article_id,product_code,prod_name,product_type_no,product_type_name,product_group_name,\
graphical_appearance_no,graphical_appearance_name,colour_group_code,colour_group_name,\
perceived_colour_value_id,perceived_colour_value_name,perceived_colour_master_id,\
perceived_colour_master_name,department_no,department_name,index_code,index_name,\
index_group_no,index_group_name,section_no,section_name,garment_group_no,garment_group_name,detail_desc"
    )?;
    let mut order: Vec<usize> = (0..articles.len()).collect();
    order.sort_by_key(|&i| articles[i].id);
    for i in order {
        let a = &articles[i];
        let ty = &TYPES[a.ptype];
        let col = COLOURS[a.colour];
        let app = APPEARANCES[a.appearance];
        let idx = INDEXES[a.index];
        let sec = SECTIONS[a.section];
        let gg = GARMENT_GROUPS[ty.garment];
        let (dep_no, dep_name) = a.department();
        writeln!(
            w,
            "{:010},{:07},{},{},{},{},{},{},{:02},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            a.id,
            a.product_code,
            quote(&a.product_name),
            ty.no,
            quote(ty.name),
            quote(ty.group),
            app.0,
            quote(app.1),
            col.0,
            quote(col.1),
            col.4,
            quote(col.5),
            col.2,
            quote(col.3),
            dep_no,
            quote(&dep_name),
            idx.0,
            quote(idx.1),
            idx.2,
            quote(idx.3),
            sec.0,
            quote(sec.1),
            gg.0,
            quote(gg.1),
            quote(&a.desc),
        )?;
    }
    Ok(())
}

/// CSV quoting as pandas writes it: only when needed.
pub fn quote(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}
