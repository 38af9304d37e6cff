# The local edge: Varnish 7.1 + varnish-modules (xkey), behaving like edgerail's CloudFront
# distribution (template.yaml's cache policy), in front of the API on 127.0.0.1:3000.
#
# - TTL from s-maxage (else max-age); stale-while-revalidate is served from grace while a
#   background fetch refreshes it. Past that, within stale-if-error, a miss is forwarded to the
#   API, and only if it fails (a 5xx, or no answer at all) is the stale copy served instead.
# - No health probe, as CloudFront has none: every miss reaches the API, which serves its own
#   stale copies while the database is down. A probe would mark the API sick during a database
#   restart and answer every miss 503 without asking it.
# - Cache key: path plus the query parameters its route declares in the policy (the block marked
#   "query keys" in vcl_recv is generated from it, as the distribution's behaviours are); every
#   other parameter, and every query string of a route that declares none, is dropped.
# - 404s are cached for their (short) s-maxage; 5xx, no-store answers and answers without
#   max-age/s-maxage are not cached (the distribution's DefaultTTL is 0).
# - Tags from the API's Cache-Tag header become xkey keys.
# - PURGE from localhost: a path, a prefix ending in `*` (ban), or tags (`xkey-purge: t1 t2`).
# - X-Cache: Hit | Miss on every answer; Stale for a copy served because the origin failed.
vcl 4.1;

import std;
import xkey;

backend api {
    .host = "127.0.0.1";
    .port = "3000";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
}

acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    # One host, like a single distribution (and so a PURGE hashes like the GET it targets).
    set req.http.host = "edgerail.local";
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "PURGE is only accepted from localhost"));
        }
        if (req.http.xkey-purge) {
            set req.http.x-purged = xkey.purge(req.http.xkey-purge);
            return (synth(200, "Purged " + req.http.x-purged + " objects by tag"));
        }
        if (req.url ~ "\*$") {
            # Lurker-friendly ban on the stored URL; regex metacharacters of the prefix escaped.
            ban("obj.http.x-url ~ ^" + regsuball(regsub(req.url, "\*$", ""), "([.?+^$()\[\]{}|\\])", "\\\1"));
            return (synth(200, "Banned prefix"));
        }
        return (purge);
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # BEGIN query keys: generated from cache-policy/policy.toml by the test
    # edge::the_edges_query_keys_are_the_policys (regenerate with EDGERAIL_BLESS=1); not edited by hand.
    if (req.url ~ "\?") {
        unset req.http.x-keep;
        if (req.url ~ "^/v1/sightings/latest\?") {
            if (req.url ~ "[?&]limit=") {
                set req.http.x-keep = req.http.x-keep + "&" + regsub(req.url, "^.*[?&](limit=[^&]*).*$", "\1");
            }
        } elsif (req.url ~ "^/v1/stations/[^/?]+/sightings\?") {
            if (req.url ~ "[?&]limit=") {
                set req.http.x-keep = req.http.x-keep + "&" + regsub(req.url, "^.*[?&](limit=[^&]*).*$", "\1");
            }
        }
        set req.url = regsub(req.url, "\?.*$", "");
        if (req.http.x-keep) {
            set req.url = req.url + "?" + regsub(req.http.x-keep, "^&", "");
            unset req.http.x-keep;
        }
    }
    # END query keys
    unset req.http.cookie;
    unset req.http.authorization;
    # (hash_always_miss outlives a restart: set it for each pass through here.)
    if (req.restarts > 0 && req.http.x-refresh) {
        set req.hash_always_miss = true;
    } else {
        set req.hash_always_miss = false;
    }
    if (req.restarts == 0) {
        # Set by this VCL only: a viewer's copy of either marker means nothing.
        unset req.http.x-refresh;
        unset req.http.x-stale-if-error;
        unset req.http.x-served-stale;
    }
    return (hash);
}

sub vcl_hit {
    if (obj.ttl >= 0s) {
        return (deliver);
    }
    # stale-while-revalidate: deliver and refresh in the background.
    if (obj.ttl + std.duration(obj.http.x-swr + "s", 0s) > 0s) {
        return (deliver);
    }
    # stale-if-error: the refresh below failed, deliver what we have.
    if (req.http.x-stale-if-error && obj.ttl + obj.grace > 0s) {
        set req.http.x-served-stale = "1";
        return (deliver);
    }
    # Too stale to serve unless the API fails: fetch a fresh copy (see vcl_synth).
    set req.http.x-refresh = "1";
    return (restart);
}

sub vcl_synth {
    # A refresh of a copy we hold failed (abandoned in vcl_backend_response or
    # vcl_backend_error): look the copy up again and serve it within its stale-if-error window.
    if (resp.status == 503 && req.http.x-refresh && !req.http.x-stale-if-error) {
        unset req.http.x-refresh;
        set req.http.x-stale-if-error = "1";
        return (restart);
    }
}

sub vcl_backend_error {
    # No answer from the API: keep the stale copy (background refresh), or let vcl_synth serve it.
    if (bereq.is_bgfetch || bereq.http.x-refresh) {
        return (abandon);
    }
}

sub vcl_backend_response {
    set beresp.http.x-url = bereq.url;
    if (beresp.http.cache-tag) {
        set beresp.http.xkey = regsuball(beresp.http.cache-tag, ",", " ");
    }
    if (beresp.status >= 500) {
        if (bereq.is_bgfetch || bereq.http.x-refresh) {
            # Keep serving the stale copy rather than caching an error (for a refresh, vcl_synth
            # serves it within stale-if-error).
            return (abandon);
        }
        set beresp.uncacheable = true;
        set beresp.ttl = 0s;
        return (deliver);
    }
    # Like the distribution (DefaultTTL 0): only what the API allows to be cached is cached.
    # (Returning from this sub skips Varnish's built-in rules, so they are spelled out here.)
    if (beresp.http.cache-control ~ "(no-store|no-cache|private)" || beresp.http.cache-control !~ "max-age") {
        set beresp.uncacheable = true;
        set beresp.ttl = 120s;
        return (deliver);
    }
    set beresp.http.x-swr = "0";
    if (beresp.http.cache-control ~ "stale-while-revalidate=[0-9]+") {
        set beresp.http.x-swr = regsub(beresp.http.cache-control, "^.*stale-while-revalidate=([0-9]+).*$", "\1");
    }
    # Grace covers both stale windows; vcl_hit decides which one applies.
    set beresp.grace = std.duration(beresp.http.x-swr + "s", 0s);
    if (beresp.http.cache-control ~ "stale-if-error=[0-9]+") {
        set beresp.grace = std.duration(regsub(beresp.http.cache-control, "^.*stale-if-error=([0-9]+).*$", "\1") + "s", 0s);
    }
    return (deliver);
}

sub vcl_deliver {
    # CORS after the cache, as the distribution's response headers policy does it (CorsAllowOrigin
    # "*"): a cached object never varies on Origin, and preflights are answered by the origin's 204.
    if (req.http.Origin) {
        set resp.http.Access-Control-Allow-Origin = "*";
        set resp.http.Access-Control-Expose-Headers = "etag, x-local-cache, server-timing, x-edgerail-version";
        if (req.method == "OPTIONS") {
            set resp.http.Access-Control-Allow-Methods = "GET, HEAD, OPTIONS";
            set resp.http.Access-Control-Allow-Headers = "if-none-match";
            set resp.http.Access-Control-Max-Age = "86400";
        }
    }
    if (obj.hits > 0) {
        set resp.http.X-Cache = "Hit";
    } else {
        set resp.http.X-Cache = "Miss";
    }
    if (req.http.x-served-stale) {
        # Served within stale-if-error because the origin failed: said, so a viewer (and the
        # soak's checker) can tell it from a copy the edge holds as fresh.
        set resp.http.X-Cache = "Stale";
    }
    unset resp.http.x-url;
    unset resp.http.x-swr;
    unset resp.http.xkey;
    unset resp.http.via;
    unset resp.http.x-varnish;
}
