//! The console's two server-rendered pages: the sign-in form, and the shell every other
//! console page starts from (its content is drawn by `assets/app.js` from the REST API).
//! Neither has an inline script or style: the Content-Security-Policy forbids both.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    stages::render::template::escape_html(text, &mut out);
    out
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

const HEAD: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Herald console</title>
<link rel="stylesheet" href="/console/assets/console.css">
"#;

/// The sign-in form, with an error in words when the last attempt failed.
pub(crate) fn sign_in(status: StatusCode, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert" id="signin-error">{}</p>"#, escape(e)))
        .unwrap_or_default();
    html(
        status,
        format!(
            r#"{HEAD}</head>
<body class="signin">
<main>
<h1>Herald</h1>
<p>Sign in with a token minted by <code>herald token</code>.</p>
{error}
<form method="post" action="/console/signin">
<label for="token">Token</label>
<textarea id="token" name="token" rows="5" required autocomplete="off" spellcheck="false"></textarea>
<button type="submit" id="signin">Sign in</button>
</form>
</main>
</body>
</html>
"#
        ),
    )
}

/// The shell of every signed-in page; `app.js` fills `<main>` for the path.
pub(crate) fn shell() -> Response {
    html(
        StatusCode::OK,
        format!(
            r##"{HEAD}<script type="module" src="/console/assets/app.js"></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header>
<nav aria-label="Console">
<span class="brand">Herald</span>
<a href="/console/campaigns">Campaigns</a>
<a href="/console/audiences">Audiences</a>
<a href="/console/templates">Templates</a>
<a href="/console/dlq">Dead letters</a>
<a href="/console/suppressions">Suppressions</a>
<a href="/console/providers">Providers</a>
<span class="who" id="who"></span>
<button type="button" id="signout">Sign out</button>
</nav>
</header>
<div id="alert" role="alert" aria-live="assertive" hidden></div>
<main id="main" tabindex="-1"><p>Loading…</p></main>
</body>
</html>
"##
        ),
    )
}
