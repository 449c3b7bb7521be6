//! A generated corpus that looks like npm package descriptions, so that a
//! leaf, a demo or a test runs without any download.
//!
//! Generation is deterministic: it uses its own splitmix64 generator and
//! fixed word lists, so the same call gives the same documents on every
//! machine and every version of every dependency.

use std::collections::HashSet;

use crate::corpus::Document;

/// The number of documents of [`builtin_corpus`].
pub const BUILTIN_DOCUMENTS: usize = 20_000;
const BUILTIN_SEED: u64 = 0x5eed_1eaf_2024;

/// The generated corpus every leaf can serve without a file: about 20,000
/// npm-like packages (`fast-json-parser`, "A fast JSON parser for Node.js
/// with streaming support and TypeScript types").
pub fn builtin_corpus() -> Vec<Document> {
    generate_corpus(BUILTIN_DOCUMENTS, BUILTIN_SEED)
}

/// `count` npm-like documents from `seed`, with unique ids.
pub fn generate_corpus(count: usize, seed: u64) -> Vec<Document> {
    let mut rng = SplitMix64::new(seed);
    let mut seen = HashSet::with_capacity(count);
    let mut docs = Vec::with_capacity(count);
    while docs.len() < count {
        let doc = generate_document(&mut rng);
        let mut id = doc.id.clone();
        let mut n = 2;
        while !seen.insert(id.clone()) {
            id = format!("{}-{n}", doc.id);
            n += 1;
        }
        docs.push(Document {
            id: id.clone(),
            title: id,
            ..doc
        });
    }
    docs
}

/// Queries in the style users type, drawn from the same vocabulary: single
/// words, pairs, quoted phrases, `+required` and `-excluded` terms.
pub fn sample_queries(count: usize, seed: u64) -> Vec<String> {
    let mut rng = SplitMix64::new(seed);
    let mut queries = Vec::with_capacity(count);
    for _ in 0..count {
        let topic = rng.pick(TOPICS);
        let (_, phrase) = rng.pick(topic.items);
        let words: Vec<&str> = phrase.split_whitespace().collect();
        let word = rng.pick(&words);
        let other = rng.pick(ADJECTIVES);
        let feature = rng.pick(FEATURES);
        let query = match rng.below(8) {
            0 => (*word).to_string(),
            1 => phrase.to_string(),
            2 => format!("\"{phrase}\""),
            3 => format!("+{word} -{}", rng.pick(topic.items).0.replace('-', " ")),
            4 => format!("{other} {word}"),
            5 => format!("{word} {feature}"),
            6 => format!("+{} {word}", topic.name),
            _ => format!("{} {}", topic.name, rng.pick(PLATFORMS)),
        };
        queries.push(query.to_lowercase());
    }
    queries
}

/// Steele, Lea and Flood's splitmix64: tiny, fast, and fixed forever, so the
/// built-in corpus (and anything else seeded with it, such as the
/// calibration tool's shard drops) never changes with a crate version.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0); the modulo bias is irrelevant here.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

struct Topic {
    name: &'static str,
    /// (name part used in package names, phrase used in descriptions).
    items: &'static [(&'static str, &'static str)],
}

const TOPICS: &[Topic] = &[
    Topic {
        name: "json",
        items: &[
            ("json-parser", "JSON parser"),
            ("json-schema", "JSON schema validator"),
            ("json-stringify", "JSON serializer"),
            ("json-diff", "JSON diff tool"),
            ("json-formatter", "JSON formatter"),
            ("json-stream", "streaming JSON parser"),
        ],
    },
    Topic {
        name: "http",
        items: &[
            ("http-server", "HTTP server"),
            ("http-client", "HTTP client"),
            ("http-proxy", "HTTP proxy server"),
            ("http-router", "HTTP router"),
            ("http-mock", "HTTP mocking library"),
            ("fetch", "fetch HTTP client"),
        ],
    },
    Topic {
        name: "server",
        items: &[
            ("web-server", "web server"),
            ("static-server", "static file server"),
            ("dev-server", "development server with live reload"),
            ("api-server", "REST API server"),
            ("graphql-server", "GraphQL server"),
        ],
    },
    Topic {
        name: "react",
        items: &[
            ("react-component", "React component"),
            ("react-hooks", "React hooks library"),
            ("react-table", "React table component"),
            ("react-form", "React form component"),
            ("react-modal", "React modal dialog component"),
            ("react-icons", "React icon components"),
        ],
    },
    Topic {
        name: "cli",
        items: &[
            ("cli", "command line tool"),
            ("cli-args", "command line argument parser"),
            ("cli-spinner", "command line spinner"),
            ("cli-prompt", "interactive command line prompt"),
            ("cli-table", "command line table renderer"),
        ],
    },
    Topic {
        name: "logger",
        items: &[
            ("logger", "logger"),
            ("log-formatter", "log formatter for structured logging"),
            ("logger-transport", "logger transport"),
            ("color-logger", "colorful logger with color output"),
            ("json-logger", "JSON logger"),
        ],
    },
    Topic {
        name: "date",
        items: &[
            ("date-format", "date formatting library"),
            ("date-parser", "date parser"),
            ("timezone", "timezone converter"),
            ("date-utils", "date utility library"),
            ("cron", "cron schedule parser"),
        ],
    },
    Topic {
        name: "color",
        items: &[
            ("color", "color manipulation library"),
            ("color-picker", "color picker component"),
            ("ansi-colors", "terminal color styling library"),
            ("color-convert", "color conversion library"),
        ],
    },
    Topic {
        name: "test",
        items: &[
            ("test-runner", "test runner"),
            ("assert", "assertion library"),
            ("test-mock", "mocking library for tests"),
            ("snapshot-test", "snapshot testing tool"),
            ("e2e-test", "end to end testing framework"),
        ],
    },
    Topic {
        name: "database",
        items: &[
            ("sql-client", "SQL database client"),
            ("orm", "database ORM"),
            ("mongodb-driver", "MongoDB database driver"),
            ("redis-client", "Redis client"),
            ("query-builder", "SQL query builder"),
            ("migrations", "database migration tool"),
        ],
    },
    Topic {
        name: "stream",
        items: &[
            ("stream", "stream utility"),
            ("stream-parser", "streaming parser"),
            ("stream-transform", "transform stream"),
            ("csv-stream", "CSV stream parser"),
            ("stream-buffer", "stream buffer"),
        ],
    },
    Topic {
        name: "crypto",
        items: &[
            ("hash", "hashing library"),
            ("crypto", "cryptography library"),
            ("jwt", "JSON Web Token library"),
            ("password-hash", "password hashing library"),
            ("uuid", "UUID generator"),
            ("encrypt", "encryption library"),
        ],
    },
    Topic {
        name: "markdown",
        items: &[
            ("markdown", "Markdown parser"),
            ("markdown-renderer", "Markdown renderer"),
            ("markdown-editor", "Markdown editor component"),
            ("markdown-lint", "Markdown linter"),
        ],
    },
    Topic {
        name: "image",
        items: &[
            ("image-resize", "image resizing library"),
            ("image-optimizer", "image optimizer"),
            ("image-loader", "lazy image loader"),
            ("svg", "SVG manipulation library"),
            ("thumbnail", "thumbnail generator"),
        ],
    },
    Topic {
        name: "router",
        items: &[
            ("router", "URL router"),
            ("react-router", "React router component"),
            ("route-matcher", "route matcher"),
            ("hash-router", "hash based router"),
        ],
    },
    Topic {
        name: "cache",
        items: &[
            ("cache", "in-memory cache"),
            ("lru-cache", "LRU cache"),
            ("cache-middleware", "HTTP cache middleware"),
            ("redis-cache", "Redis cache adapter"),
            ("memoize", "memoization cache"),
        ],
    },
    Topic {
        name: "config",
        items: &[
            ("config", "configuration loader"),
            ("dotenv", "environment variable loader"),
            ("yaml-config", "YAML configuration parser"),
            ("rc-loader", "rc file loader"),
        ],
    },
    Topic {
        name: "string",
        items: &[
            ("string-utils", "string utility library"),
            ("slugify", "slug generator for strings"),
            ("camelcase", "camel case string converter"),
            ("template", "string template engine"),
            ("sanitize", "HTML sanitizer"),
        ],
    },
    Topic {
        name: "promise",
        items: &[
            ("promise-queue", "promise queue with concurrency limit"),
            ("retry", "retry helper for promises"),
            ("async-utils", "async utility library"),
            ("timeout", "promise timeout helper"),
            ("p-map", "promise map with concurrency"),
        ],
    },
    Topic {
        name: "websocket",
        items: &[
            ("websocket", "WebSocket server"),
            ("ws-client", "WebSocket client"),
            ("socket", "realtime socket library"),
            ("pubsub", "publish subscribe messaging"),
        ],
    },
    Topic {
        name: "validation",
        items: &[
            ("validator", "validation library"),
            ("schema-validator", "schema validation library"),
            ("form-validation", "form validation helper"),
            ("email-validator", "email address validator"),
        ],
    },
    Topic {
        name: "file",
        items: &[
            ("fs-utils", "file system utility"),
            ("glob", "glob pattern matcher"),
            ("file-watcher", "file watcher"),
            ("zip", "zip archive library"),
            ("path-utils", "path manipulation library"),
        ],
    },
    Topic {
        name: "build",
        items: &[
            ("bundler", "JavaScript bundler"),
            ("webpack-plugin", "webpack plugin"),
            ("babel-plugin", "Babel plugin"),
            ("eslint-plugin", "ESLint plugin"),
            ("minify", "JavaScript minifier"),
            ("css-loader", "CSS loader"),
        ],
    },
    Topic {
        name: "vue",
        items: &[
            ("vue-component", "Vue component"),
            ("vue-plugin", "Vue plugin"),
            ("vue-store", "Vue state store"),
            ("vue-router", "Vue router"),
        ],
    },
    Topic {
        name: "auth",
        items: &[
            ("auth", "authentication middleware"),
            ("oauth", "OAuth client"),
            ("session", "session middleware"),
            ("passport-strategy", "Passport authentication strategy"),
            ("rate-limit", "rate limiter middleware"),
        ],
    },
    Topic {
        name: "chart",
        items: &[
            ("chart", "chart library"),
            ("chart-component", "React chart component"),
            ("plot", "plotting library"),
            ("graph", "graph visualization library"),
        ],
    },
    Topic {
        name: "email",
        items: &[
            ("email", "email sending library"),
            ("mailer", "SMTP mailer"),
            ("email-template", "email template renderer"),
        ],
    },
    Topic {
        name: "queue",
        items: &[
            ("queue", "job queue"),
            ("task-queue", "background task queue backed by Redis"),
            ("scheduler", "task scheduler"),
            ("event-emitter", "event emitter"),
        ],
    },
];

const ADJECTIVES: &[&str] = &[
    "fast",
    "tiny",
    "simple",
    "lightweight",
    "modern",
    "minimal",
    "robust",
    "small",
    "easy",
    "flexible",
    "secure",
    "async",
    "typed",
    "universal",
    "extensible",
    "performant",
    "reliable",
    "smart",
    "super",
    "micro",
    "better",
    "awesome",
    "next",
    "blazing-fast",
    "zero-config",
];

const SUFFIXES: &[&str] = &[
    "js", "lite", "next", "pro", "x", "core", "utils", "kit", "plus", "ts",
];

const SCOPES: &[&str] = &["acme", "tools", "labs", "dev", "oss", "cloud", "hq", "io"];

const PLATFORMS: &[&str] = &[
    "Node.js",
    "the browser",
    "Deno",
    "Bun",
    "React Native",
    "Electron",
    "Node.js and the browser",
    "TypeScript projects",
    "Express",
    "Koa",
    "Next.js",
    "serverless functions",
];

const FEATURES: &[&str] = &[
    "streaming support",
    "TypeScript types",
    "zero dependencies",
    "promise support",
    "async/await",
    "ES modules",
    "CommonJS support",
    "tree shaking",
    "plugin support",
    "caching",
    "colorful output",
    "detailed error messages",
    "schema validation",
    "custom formatters",
    "JSON output",
    "middleware support",
    "full test coverage",
    "unicode support",
    "TLS support",
    "retry logic",
    "configurable timeouts",
    "pretty printing",
    "source maps",
    "hot reload",
    "lazy loading",
    "a command line interface",
    "configurable log levels",
    "browser compatibility",
    "a small bundle size",
    "i18n support",
];

const EXTRAS: &[&str] = &[
    "Written in TypeScript.",
    "Fully tested.",
    "MIT licensed.",
    "Drop-in replacement for the standard library.",
    "Works with any framework.",
    "Inspired by the Go standard library.",
    "Battle tested in production.",
    "Maintained by the community.",
];

fn generate_document(rng: &mut SplitMix64) -> Document {
    let topic = rng.pick(TOPICS);
    let (part, phrase) = *rng.pick(topic.items);
    let adjective = *rng.pick(ADJECTIVES);
    let adjective2 = *rng.pick(ADJECTIVES);

    let mut name = String::new();
    if rng.chance(12) {
        name.push('@');
        let scope = *rng.pick(SCOPES);
        name.push_str(scope);
        name.push('/');
    }
    if rng.chance(60) {
        name.push_str(adjective);
        name.push('-');
    }
    name.push_str(part);
    if rng.chance(30) {
        name.push('-');
        let suffix = *rng.pick(SUFFIXES);
        name.push_str(suffix);
    }

    let platform = *rng.pick(PLATFORMS);
    let feature = *rng.pick(FEATURES);
    let feature2 = *rng.pick(FEATURES);
    let mut body = match rng.below(4) {
        0 => format!("A {adjective} {phrase} for {platform} with {feature} and {feature2}."),
        1 => format!(
            "{} {phrase} with {feature}. Works in {platform}.",
            capitalize(adjective)
        ),
        2 => format!(
            "{} for {platform}: {adjective}, {adjective2} and {feature}.",
            capitalize(phrase)
        ),
        _ => format!("The {adjective} {phrase}. Supports {feature} and {feature2}."),
    };
    if rng.chance(25) {
        let other = rng.pick(TOPICS);
        let (_, other_phrase) = rng.pick(other.items);
        body.push_str(&format!(" Includes a {other_phrase}."));
    }
    if rng.chance(40) {
        body.push(' ');
        let extra = *rng.pick(EXTRAS);
        body.push_str(extra);
    }
    // A long-tailed popularity, as in a package registry.
    let popularity = 1_000_000 / (1 + rng.below(10_000) as u64 * rng.below(100) as u64);
    Document {
        id: name.clone(),
        title: name,
        body,
        popularity: Some(popularity as f64),
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_corpus_is_deterministic_and_unique() {
        let a = generate_corpus(2000, 7);
        let b = generate_corpus(2000, 7);
        assert_eq!(a, b);
        let ids: HashSet<&str> = a.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), a.len());
        assert_ne!(a, generate_corpus(2000, 8));
    }

    #[test]
    fn builtin_corpus_has_the_advertised_size_and_shape() {
        let docs = builtin_corpus();
        assert_eq!(docs.len(), BUILTIN_DOCUMENTS);
        // Pinned: the first document never changes.
        let first = &docs[0];
        assert_eq!(first.id, first.title);
        assert!(!first.body.is_empty());
        assert!(docs
            .iter()
            .any(|d| d.id.contains("json-parser") && d.body.contains("JSON parser")));
        assert!(docs.iter().any(|d| d.body.contains("command line")));
    }

    #[test]
    fn sample_queries_are_deterministic() {
        let queries = sample_queries(50, 1);
        assert_eq!(queries, sample_queries(50, 1));
        assert!(queries.iter().all(|q| !q.trim().is_empty()));
    }
}
