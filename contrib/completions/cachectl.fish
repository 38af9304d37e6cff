# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_cachectl_global_optspecs
    string join \n h/help V/version
end

function __fish_cachectl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_cachectl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_cachectl_using_subcommand
    set -l cmd (__fish_cachectl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c cachectl -n "__fish_cachectl_needs_command" -s h -l help -d 'Print help'
complete -c cachectl -n "__fish_cachectl_needs_command" -s V -l version -d 'Print version'
complete -c cachectl -n "__fish_cachectl_needs_command" -f -a "policy" -d 'Print the cache policy as a table'
complete -c cachectl -n "__fish_cachectl_needs_command" -f -a "plan" -d 'Print the items an invalidation of these tags or paths would send, and what it would cost this month (sends nothing)'
complete -c cachectl -n "__fish_cachectl_needs_command" -f -a "invalidate" -d 'Invalidate tags or paths now'
complete -c cachectl -n "__fish_cachectl_needs_command" -f -a "warm" -d 'Fetch the whole warm set through the edge now'
complete -c cachectl -n "__fish_cachectl_needs_command" -f -a "verify" -d 'Read paths through the edge (WARM_BASE_URL) and check that each answer shows every change already sent for invalidation that covers it; exits non-zero when one does not'
complete -c cachectl -n "__fish_cachectl_needs_command" -f -a "status" -d 'Pending changes, this month\'s invalidation items against the budget, recent invalidations, and the last hour\'s checks of invalidations through the edge'
complete -c cachectl -n "__fish_cachectl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cachectl -n "__fish_cachectl_using_subcommand policy" -s h -l help -d 'Print help'
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l tag -d 'Cache tags, e.g. `formation:10701F`, or a family such as `formation:*` (every formation) (repeatable)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l path -d 'Paths, e.g. `/v1/lines` or `/v1/formations/*` (repeatable)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l invalidator -d 'Invalidation backend' -r -f -a "cloudfront\t'CloudFront `CreateInvalidation` (DISTRIBUTION_ID)'
purge\t'HTTP PURGE to a Varnish-style cache (PURGE_URL)'
none\t'Log only'"
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l distribution-id -d 'CloudFront distribution to invalidate (INVALIDATOR=cloudfront)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l purge-url -d 'Base URL of the cache to purge (INVALIDATOR=purge), e.g. http://127.0.0.1:6081' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l mode -d 'Invalidate by cache tag or by path' -r -f -a "tags\t'`#tag` items (CloudFront cache tags, Varnish xkey)'
paths\t'Paths from the policy\'s route templates'"
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l path-budget -d 'Paths per calendar month (CloudFront\'s free tier is 1000). Batches are coarsened within collections to fit; once spent, batches are coalesced (see INVALIDATION_OVER_BUDGET_EVERY)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l over-budget-every -d 'Over the month\'s budget, at most one batch per this interval; changes wait and coalesce' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l collapse-at -d 'This many paths under one prefix become one wildcard' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l retry-base -d 'First delay when CloudFront says too many invalidations are in progress (doubles each retry)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l retry-attempts -d 'Attempts when CloudFront says too many invalidations are in progress' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l wait-timeout -d 'How long to wait for an invalidation to complete before warming (CloudFront)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l poll-interval -d 'How often to ask CloudFront whether an invalidation completed' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l call-timeout -d 'The longest one call to the invalidation API may take (CloudFront\'s, or a purge): one that accepts a request and never answers fails the call' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l database-url -d 'PostgreSQL URL (`postgres://…`) or SQLite URL (`sqlite://…`). The API, when it is unset, serves the embedded SQLite file at SQLITE_PATH (created and seeded on first run); on Lambda it is required, or DATABASE_SECRET_ARN' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l database-secret-arn -d 'AWS Secrets Manager secret (name or ARN) holding the database URL, read once at start when DATABASE_URL is unset (docs/deploy.md lists the shapes understood)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l service-tz -d 'IANA time zone of the timetable' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l service-day-start -d 'Local time (HH:MM) at which a service day starts' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l db-statement-timeout -d 'The longest one database round trip may take (a statement waiting on a lock, or a connection gone silent): past it the call fails, and with it the warmer\'s tick, which the next one retries' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -l json -d 'Print one JSON object instead of text'
complete -c cachectl -n "__fish_cachectl_using_subcommand plan" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l tag -d 'Cache tags, e.g. `formation:10701F`, or a family such as `formation:*` (every formation) (repeatable)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l path -d 'Paths, e.g. `/v1/lines` or `/v1/formations/*` (repeatable)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l invalidator -d 'Invalidation backend' -r -f -a "cloudfront\t'CloudFront `CreateInvalidation` (DISTRIBUTION_ID)'
purge\t'HTTP PURGE to a Varnish-style cache (PURGE_URL)'
none\t'Log only'"
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l distribution-id -d 'CloudFront distribution to invalidate (INVALIDATOR=cloudfront)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l purge-url -d 'Base URL of the cache to purge (INVALIDATOR=purge), e.g. http://127.0.0.1:6081' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l mode -d 'Invalidate by cache tag or by path' -r -f -a "tags\t'`#tag` items (CloudFront cache tags, Varnish xkey)'
paths\t'Paths from the policy\'s route templates'"
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l path-budget -d 'Paths per calendar month (CloudFront\'s free tier is 1000). Batches are coarsened within collections to fit; once spent, batches are coalesced (see INVALIDATION_OVER_BUDGET_EVERY)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l over-budget-every -d 'Over the month\'s budget, at most one batch per this interval; changes wait and coalesce' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l collapse-at -d 'This many paths under one prefix become one wildcard' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l retry-base -d 'First delay when CloudFront says too many invalidations are in progress (doubles each retry)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l retry-attempts -d 'Attempts when CloudFront says too many invalidations are in progress' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l wait-timeout -d 'How long to wait for an invalidation to complete before warming (CloudFront)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l poll-interval -d 'How often to ask CloudFront whether an invalidation completed' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l call-timeout -d 'The longest one call to the invalidation API may take (CloudFront\'s, or a purge): one that accepts a request and never answers fails the call' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l database-url -d 'PostgreSQL URL (`postgres://…`) or SQLite URL (`sqlite://…`). The API, when it is unset, serves the embedded SQLite file at SQLITE_PATH (created and seeded on first run); on Lambda it is required, or DATABASE_SECRET_ARN' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l database-secret-arn -d 'AWS Secrets Manager secret (name or ARN) holding the database URL, read once at start when DATABASE_URL is unset (docs/deploy.md lists the shapes understood)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l service-tz -d 'IANA time zone of the timetable' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l service-day-start -d 'Local time (HH:MM) at which a service day starts' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l db-statement-timeout -d 'The longest one database round trip may take (a statement waiting on a lock, or a connection gone silent): past it the call fails, and with it the warmer\'s tick, which the next one retries' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l wait -d 'Show progress until the invalidation completes'
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l dry-run -d 'Print what would be sent and stop'
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -l json -d 'Print one JSON object instead of text'
complete -c cachectl -n "__fish_cachectl_using_subcommand invalidate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -l base-url -d 'Base URL warm requests go to: the distribution, or the local edge. Unset: no warming' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -l max-paths -d 'Upper bound of the warm set\'s floor (policy routes with `warm = true`, expanded with ids)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -l warm-budget -d 'Most warm requests one tick sends: what invalidations emptied first, then what is due' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -l learned-max -d 'Most learned paths kept and warmed (those ranked first stay: paths that exist, then by recent fetches)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -l learned-max-age -d 'A learned path the edge has not fetched from the origin for this long is forgotten' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -l concurrency -d 'Warm requests in flight at once' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -l timeout -d 'Timeout of one warm request' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -l warm-secret -d 'Sent as `x-edgerail-warm` with every warm request, so the API (given the same WARM_SECRET) does not learn the warmer\'s own fetches. Unset: the header is not sent, and the API counts the warmer\'s fetches like a viewer\'s' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -l database-url -d 'PostgreSQL URL (`postgres://…`) or SQLite URL (`sqlite://…`). The API, when it is unset, serves the embedded SQLite file at SQLITE_PATH (created and seeded on first run); on Lambda it is required, or DATABASE_SECRET_ARN' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -l database-secret-arn -d 'AWS Secrets Manager secret (name or ARN) holding the database URL, read once at start when DATABASE_URL is unset (docs/deploy.md lists the shapes understood)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -l service-tz -d 'IANA time zone of the timetable' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -l service-day-start -d 'Local time (HH:MM) at which a service day starts' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -l db-statement-timeout -d 'The longest one database round trip may take (a statement waiting on a lock, or a connection gone silent): past it the call fails, and with it the warmer\'s tick, which the next one retries' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -l json -d 'Print one JSON object instead of text'
complete -c cachectl -n "__fish_cachectl_using_subcommand warm" -s h -l help -d 'Print help'
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l propagation -d 'Changes sent for invalidation this recently are not checked: their invalidation may still be in progress (CloudFront\'s usually completes within a minute or two; a purge at once)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l base-url -d 'Base URL warm requests go to: the distribution, or the local edge. Unset: no warming' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l max-paths -d 'Upper bound of the warm set\'s floor (policy routes with `warm = true`, expanded with ids)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l warm-budget -d 'Most warm requests one tick sends: what invalidations emptied first, then what is due' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l learned-max -d 'Most learned paths kept and warmed (those ranked first stay: paths that exist, then by recent fetches)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l learned-max-age -d 'A learned path the edge has not fetched from the origin for this long is forgotten' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l concurrency -d 'Warm requests in flight at once' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l timeout -d 'Timeout of one warm request' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l warm-secret -d 'Sent as `x-edgerail-warm` with every warm request, so the API (given the same WARM_SECRET) does not learn the warmer\'s own fetches. Unset: the header is not sent, and the API counts the warmer\'s fetches like a viewer\'s' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l database-url -d 'PostgreSQL URL (`postgres://…`) or SQLite URL (`sqlite://…`). The API, when it is unset, serves the embedded SQLite file at SQLITE_PATH (created and seeded on first run); on Lambda it is required, or DATABASE_SECRET_ARN' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l database-secret-arn -d 'AWS Secrets Manager secret (name or ARN) holding the database URL, read once at start when DATABASE_URL is unset (docs/deploy.md lists the shapes understood)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l service-tz -d 'IANA time zone of the timetable' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l service-day-start -d 'Local time (HH:MM) at which a service day starts' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l db-statement-timeout -d 'The longest one database round trip may take (a statement waiting on a lock, or a connection gone silent): past it the call fails, and with it the warmer\'s tick, which the next one retries' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -l json -d 'Print one JSON object instead of text'
complete -c cachectl -n "__fish_cachectl_using_subcommand verify" -s h -l help -d 'Print help'
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l invalidator -d 'Invalidation backend' -r -f -a "cloudfront\t'CloudFront `CreateInvalidation` (DISTRIBUTION_ID)'
purge\t'HTTP PURGE to a Varnish-style cache (PURGE_URL)'
none\t'Log only'"
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l distribution-id -d 'CloudFront distribution to invalidate (INVALIDATOR=cloudfront)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l purge-url -d 'Base URL of the cache to purge (INVALIDATOR=purge), e.g. http://127.0.0.1:6081' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l mode -d 'Invalidate by cache tag or by path' -r -f -a "tags\t'`#tag` items (CloudFront cache tags, Varnish xkey)'
paths\t'Paths from the policy\'s route templates'"
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l path-budget -d 'Paths per calendar month (CloudFront\'s free tier is 1000). Batches are coarsened within collections to fit; once spent, batches are coalesced (see INVALIDATION_OVER_BUDGET_EVERY)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l over-budget-every -d 'Over the month\'s budget, at most one batch per this interval; changes wait and coalesce' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l collapse-at -d 'This many paths under one prefix become one wildcard' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l retry-base -d 'First delay when CloudFront says too many invalidations are in progress (doubles each retry)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l retry-attempts -d 'Attempts when CloudFront says too many invalidations are in progress' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l wait-timeout -d 'How long to wait for an invalidation to complete before warming (CloudFront)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l poll-interval -d 'How often to ask CloudFront whether an invalidation completed' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l call-timeout -d 'The longest one call to the invalidation API may take (CloudFront\'s, or a purge): one that accepts a request and never answers fails the call' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l database-url -d 'PostgreSQL URL (`postgres://…`) or SQLite URL (`sqlite://…`). The API, when it is unset, serves the embedded SQLite file at SQLITE_PATH (created and seeded on first run); on Lambda it is required, or DATABASE_SECRET_ARN' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l database-secret-arn -d 'AWS Secrets Manager secret (name or ARN) holding the database URL, read once at start when DATABASE_URL is unset (docs/deploy.md lists the shapes understood)' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l service-tz -d 'IANA time zone of the timetable' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l service-day-start -d 'Local time (HH:MM) at which a service day starts' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l db-statement-timeout -d 'The longest one database round trip may take (a statement waiting on a lock, or a connection gone silent): past it the call fails, and with it the warmer\'s tick, which the next one retries' -r
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -l json -d 'Print one JSON object instead of text'
complete -c cachectl -n "__fish_cachectl_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cachectl -n "__fish_cachectl_using_subcommand help; and not __fish_seen_subcommand_from policy plan invalidate warm verify status help" -f -a "policy" -d 'Print the cache policy as a table'
complete -c cachectl -n "__fish_cachectl_using_subcommand help; and not __fish_seen_subcommand_from policy plan invalidate warm verify status help" -f -a "plan" -d 'Print the items an invalidation of these tags or paths would send, and what it would cost this month (sends nothing)'
complete -c cachectl -n "__fish_cachectl_using_subcommand help; and not __fish_seen_subcommand_from policy plan invalidate warm verify status help" -f -a "invalidate" -d 'Invalidate tags or paths now'
complete -c cachectl -n "__fish_cachectl_using_subcommand help; and not __fish_seen_subcommand_from policy plan invalidate warm verify status help" -f -a "warm" -d 'Fetch the whole warm set through the edge now'
complete -c cachectl -n "__fish_cachectl_using_subcommand help; and not __fish_seen_subcommand_from policy plan invalidate warm verify status help" -f -a "verify" -d 'Read paths through the edge (WARM_BASE_URL) and check that each answer shows every change already sent for invalidation that covers it; exits non-zero when one does not'
complete -c cachectl -n "__fish_cachectl_using_subcommand help; and not __fish_seen_subcommand_from policy plan invalidate warm verify status help" -f -a "status" -d 'Pending changes, this month\'s invalidation items against the budget, recent invalidations, and the last hour\'s checks of invalidations through the edge'
complete -c cachectl -n "__fish_cachectl_using_subcommand help; and not __fish_seen_subcommand_from policy plan invalidate warm verify status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
