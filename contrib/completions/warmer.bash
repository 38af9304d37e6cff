_warmer() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="warmer"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        warmer)
            opts="-h -V --once --every --lambda-runtime-api --metrics --database-url --database-secret-arn --service-tz --service-day-start --db-statement-timeout --batch --settle --retention --lease --repeat --invalidator --distribution-id --purge-url --mode --path-budget --over-budget-every --collapse-at --retry-base --retry-attempts --wait-timeout --poll-interval --call-timeout --base-url --max-paths --warm-budget --learned-max --learned-max-age --concurrency --timeout --warm-secret --help --version"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --every)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --lambda-runtime-api)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --metrics)
                    COMPREPLY=($(compgen -W "emf off" -- "${cur}"))
                    return 0
                    ;;
                --database-url)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --database-secret-arn)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --service-tz)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --service-day-start)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --db-statement-timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --batch)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --settle)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --retention)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --lease)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --repeat)
                    COMPREPLY=($(compgen -W "true false" -- "${cur}"))
                    return 0
                    ;;
                --invalidator)
                    COMPREPLY=($(compgen -W "cloudfront purge none" -- "${cur}"))
                    return 0
                    ;;
                --distribution-id)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --purge-url)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --mode)
                    COMPREPLY=($(compgen -W "tags paths" -- "${cur}"))
                    return 0
                    ;;
                --path-budget)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --over-budget-every)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --collapse-at)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --retry-base)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --retry-attempts)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --wait-timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --poll-interval)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --call-timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --base-url)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-paths)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --warm-budget)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --learned-max)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --learned-max-age)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --concurrency)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --warm-secret)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _warmer -o nosort -o bashdefault -o default warmer
else
    complete -F _warmer -o bashdefault -o default warmer
fi
