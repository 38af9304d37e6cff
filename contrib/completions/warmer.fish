complete -c warmer -l every -d 'Run a tick every interval (e.g. `60s`) until SIGTERM/Ctrl-C' -r
complete -c warmer -l lambda-runtime-api -d 'Set by the Lambda service; its presence selects Lambda mode' -r
complete -c warmer -l metrics -d 'An Embedded Metric Format line per tick on stdout [default: on Lambda, off locally]' -r -f -a "emf\t'Embedded Metric Format lines on stdout'
off\t'None'"
complete -c warmer -l database-url -d 'PostgreSQL URL (`postgres://…`) or SQLite URL (`sqlite://…`). The API, when it is unset, serves the embedded SQLite file at SQLITE_PATH (created and seeded on first run); on Lambda it is required, or DATABASE_SECRET_ARN' -r
complete -c warmer -l database-secret-arn -d 'AWS Secrets Manager secret (name or ARN) holding the database URL, read once at start when DATABASE_URL is unset (docs/deploy.md lists the shapes understood)' -r
complete -c warmer -l service-tz -d 'IANA time zone of the timetable' -r
complete -c warmer -l service-day-start -d 'Local time (HH:MM) at which a service day starts' -r
complete -c warmer -l db-statement-timeout -d 'The longest one database round trip may take (a statement waiting on a lock, or a connection gone silent): past it the call fails, and with it the warmer\'s tick, which the next one retries' -r
complete -c warmer -l batch -d 'Most distinct tags one tick claims; it takes every pending change that carries them, so one tick drains any backlog of those tags, however many rows it has' -r
complete -c warmer -l settle -d 'How long a change must have been visible (committed) before it is claimed, so every API instance has evicted it before the edge refetches. At least the API\'s CHANGE_MAX_LAG' -r
complete -c warmer -l retention -d 'Processed changes older than this are deleted. At least twice the longest local TTL of a route with tags (2 min): an instance whose last poll predates a deleted change drops its cache' -r
complete -c warmer -l lease -d 'The longest a tick holds the warmer\'s lease, at most one tick working at a time whatever invokes it. At least the longest a tick takes (the function\'s timeout on Lambda): a tick killed at its timeout blocks the next for at most this long' -r
complete -c warmer -l repeat -d 'Send every completed invalidation once more, whether or not the warmer read a stale page back. For layered caches (CloudFront with Origin Shield): a location purged before the shield can refill from the shield\'s old copy, and the warmer reads back at one location only; the second purge, after the first completed, clears every location. Doubles the invalidation paths' -r -f -a "true\t''
false\t''"
complete -c warmer -l invalidator -d 'Invalidation backend' -r -f -a "cloudfront\t'CloudFront `CreateInvalidation` (DISTRIBUTION_ID)'
purge\t'HTTP PURGE to a Varnish-style cache (PURGE_URL)'
none\t'Log only'"
complete -c warmer -l distribution-id -d 'CloudFront distribution to invalidate (INVALIDATOR=cloudfront)' -r
complete -c warmer -l purge-url -d 'Base URL of the cache to purge (INVALIDATOR=purge), e.g. http://127.0.0.1:6081' -r
complete -c warmer -l mode -d 'Invalidate by cache tag or by path' -r -f -a "tags\t'`#tag` items (CloudFront cache tags, Varnish xkey)'
paths\t'Paths from the policy\'s route templates'"
complete -c warmer -l path-budget -d 'Paths per calendar month (CloudFront\'s free tier is 1000). Batches are coarsened within collections to fit; once spent, batches are coalesced (see INVALIDATION_OVER_BUDGET_EVERY)' -r
complete -c warmer -l over-budget-every -d 'Over the month\'s budget, at most one batch per this interval; changes wait and coalesce' -r
complete -c warmer -l collapse-at -d 'This many paths under one prefix become one wildcard' -r
complete -c warmer -l retry-base -d 'First delay when CloudFront says too many invalidations are in progress (doubles each retry)' -r
complete -c warmer -l retry-attempts -d 'Attempts when CloudFront says too many invalidations are in progress' -r
complete -c warmer -l wait-timeout -d 'How long to wait for an invalidation to complete before warming (CloudFront)' -r
complete -c warmer -l poll-interval -d 'How often to ask CloudFront whether an invalidation completed' -r
complete -c warmer -l call-timeout -d 'The longest one call to the invalidation API may take (CloudFront\'s, or a purge): one that accepts a request and never answers fails the call' -r
complete -c warmer -l base-url -d 'Base URL warm requests go to: the distribution, or the local edge. Unset: no warming' -r
complete -c warmer -l max-paths -d 'Upper bound of the warm set\'s floor (policy routes with `warm = true`, expanded with ids)' -r
complete -c warmer -l warm-budget -d 'Most warm requests one tick sends: what invalidations emptied first, then what is due' -r
complete -c warmer -l learned-max -d 'Most learned paths kept and warmed (those ranked first stay: paths that exist, then by recent fetches)' -r
complete -c warmer -l learned-max-age -d 'A learned path the edge has not fetched from the origin for this long is forgotten' -r
complete -c warmer -l concurrency -d 'Warm requests in flight at once' -r
complete -c warmer -l timeout -d 'Timeout of one warm request' -r
complete -c warmer -l warm-secret -d 'Sent as `x-edgerail-warm` with every warm request, so the API (given the same WARM_SECRET) does not learn the warmer\'s own fetches. Unset: the header is not sent, and the API counts the warmer\'s fetches like a viewer\'s' -r
complete -c warmer -l once -d 'Run one tick and exit'
complete -c warmer -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warmer -s V -l version -d 'Print version'
