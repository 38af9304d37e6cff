_cachectl() {
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
                cmd="cachectl"
                ;;
            cachectl,help)
                cmd="cachectl__subcmd__help"
                ;;
            cachectl,invalidate)
                cmd="cachectl__subcmd__invalidate"
                ;;
            cachectl,plan)
                cmd="cachectl__subcmd__plan"
                ;;
            cachectl,policy)
                cmd="cachectl__subcmd__policy"
                ;;
            cachectl,status)
                cmd="cachectl__subcmd__status"
                ;;
            cachectl,verify)
                cmd="cachectl__subcmd__verify"
                ;;
            cachectl,warm)
                cmd="cachectl__subcmd__warm"
                ;;
            cachectl__subcmd__help,help)
                cmd="cachectl__subcmd__help__subcmd__help"
                ;;
            cachectl__subcmd__help,invalidate)
                cmd="cachectl__subcmd__help__subcmd__invalidate"
                ;;
            cachectl__subcmd__help,plan)
                cmd="cachectl__subcmd__help__subcmd__plan"
                ;;
            cachectl__subcmd__help,policy)
                cmd="cachectl__subcmd__help__subcmd__policy"
                ;;
            cachectl__subcmd__help,status)
                cmd="cachectl__subcmd__help__subcmd__status"
                ;;
            cachectl__subcmd__help,verify)
                cmd="cachectl__subcmd__help__subcmd__verify"
                ;;
            cachectl__subcmd__help,warm)
                cmd="cachectl__subcmd__help__subcmd__warm"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        cachectl)
            opts="-h -V --help --version policy plan invalidate warm verify status help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        cachectl__subcmd__help)
            opts="policy plan invalidate warm verify status help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        cachectl__subcmd__help__subcmd__help)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        cachectl__subcmd__help__subcmd__invalidate)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        cachectl__subcmd__help__subcmd__plan)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        cachectl__subcmd__help__subcmd__policy)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        cachectl__subcmd__help__subcmd__status)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        cachectl__subcmd__help__subcmd__verify)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        cachectl__subcmd__help__subcmd__warm)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        cachectl__subcmd__invalidate)
            opts="-h --tag --path --wait --dry-run --json --invalidator --distribution-id --purge-url --mode --path-budget --over-budget-every --collapse-at --retry-base --retry-attempts --wait-timeout --poll-interval --call-timeout --database-url --database-secret-arn --service-tz --service-day-start --db-statement-timeout --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --tag)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --path)
                    COMPREPLY=($(compgen -f "${cur}"))
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
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        cachectl__subcmd__plan)
            opts="-h --tag --path --json --invalidator --distribution-id --purge-url --mode --path-budget --over-budget-every --collapse-at --retry-base --retry-attempts --wait-timeout --poll-interval --call-timeout --database-url --database-secret-arn --service-tz --service-day-start --db-statement-timeout --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --tag)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --path)
                    COMPREPLY=($(compgen -f "${cur}"))
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
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        cachectl__subcmd__policy)
            opts="-h --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        cachectl__subcmd__status)
            opts="-h --json --invalidator --distribution-id --purge-url --mode --path-budget --over-budget-every --collapse-at --retry-base --retry-attempts --wait-timeout --poll-interval --call-timeout --database-url --database-secret-arn --service-tz --service-day-start --db-statement-timeout --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
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
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        cachectl__subcmd__verify)
            opts="-h --propagation --json --base-url --max-paths --warm-budget --learned-max --learned-max-age --concurrency --timeout --warm-secret --database-url --database-secret-arn --service-tz --service-day-start --db-statement-timeout --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --propagation)
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
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        cachectl__subcmd__warm)
            opts="-h --json --base-url --max-paths --warm-budget --learned-max --learned-max-age --concurrency --timeout --warm-secret --database-url --database-secret-arn --service-tz --service-day-start --db-statement-timeout --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
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
    complete -F _cachectl -o nosort -o bashdefault -o default cachectl
else
    complete -F _cachectl -o bashdefault -o default cachectl
fi
