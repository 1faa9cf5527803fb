"""The guard bash runs while it sources a `source:` library (see `flowsh.bashlib`).

A DEBUG trap (``extdebug``) decides for each simple command at the file's top level:

* runs: assignments and ``declare/typeset/export/readonly/local/unset`` (skipped in
  definitions-only mode: the run evaluated them once, SOURCE-2), ``: "${X:=a}"`` without a
  redirection or command substitution, ``source``/``.`` (the file guarded the same way),
  ``shopt`` named literally, ``umask``, the header of a ``for`` or ``case`` (the commands
  in it are guarded one by one), and tests without side effects (``[``, ``[[``, ``test``,
  ``command -v``, ``type``, ``declare -F``, ``true``, ``false``, ``(( ))`` without assignment) so a
  top-level ``if``/``&&`` takes bash's branch; ``set ...`` is replayed after the file, as
  written when literal, else its leading options only (the replay runs no command).
* a subshell at the top level (``( ... )``, ``cmd &``, a pipeline's side) runs only as a
  command substitution of the command the guard let run on that line (``DIR=$(dirname ..)``);
  when probing (validate, import: ``__flowsh_probe``) only one made of dirname, basename,
  cd, pwd, realpath, readlink, echo, printf.
* refused (exit 2, FILE:LINE): a top-level ``if``/``elif`` whose test is any other command
  (a skipped command reports success, so its branch would be a lie; continued lines too),
  ``source <(cmd)``, a ``shopt`` that would switch the guard off (``extdebug``, ``-o``, a
  variable), ``unset`` of FUNCNAME, BASH_*, __flowsh_* or a variable's value; and, after
  an evaluating read, a file whose functions differ when read again for definitions only
  with the final values (a top-level ``case``/``if`` on a value the file changes later).
* anything else is skipped; the same skipped command coming round twice (a ``while read``
  loop that would spin) stops reading the file there.
"""

from __future__ import annotations

# Bash functions used while sourcing; removed again afterwards (`unset -f`).
GUARD = r"""
__flowsh_assign_only() {
  # 0 when $1 is only NAME=value words (no command word), like `X="a b" Y=$(f x)`.
  local s=$1 n=${#1} i=0 c stack=
  while :; do
    while (( i < n )) && [[ ${s:i:1} == [[:space:]] ]]; do i=$((i + 1)); done
    (( i >= n )) && return 0
    [[ ${s:i} =~ ^[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?= ]] || return 1
    i=$((i + ${#BASH_REMATCH[0]}))
    [[ ${s:i:1} == "(" ]] && return 0  # an array assignment cannot prefix a command
    while (( i < n )); do
      c=${s:i:1}
      if [[ $c != [\\\"\'\`\$\(\)\{\}[:space:]] ]]; then
        # A run of plain characters in one step: bash copies $s for every ${s:i:1}, so
        # going char by char made a 140 KB value take minutes.
        c=${s:i}; c=${c%%[\\\"\'\`\$\(\)\{\}[:space:]]*}; i=$((i + ${#c}))
        continue
      fi
      case ${stack: -1}:$c in
        q:\\|p:\\|b:\\|k:\\|:\\) i=$((i + 1)) ;;
        q:\") stack=${stack%?} ;;
        k:\`) stack=${stack%?} ;;
        k:*) ;;
        q:\$|p:\$|b:\$|:\$)
          case ${s:i+1:1} in
            "(") stack+=p; i=$((i + 1)) ;;
            "{") stack+=b; i=$((i + 1)) ;;
          esac ;;
        q:\`|p:\`|b:\`|:\`) stack+=k ;;
        q:*) ;;
        *:\') c=${s:i+1}; c=${c%%\'*}; i=$((i + ${#c} + 1)) ;;
        *:\") stack+=q ;;
        p:\() stack+=p ;;
        p:\)) stack=${stack%?} ;;
        b:\}) stack=${stack%?} ;;
        :[[:space:]]) break ;;
      esac
      i=$((i + 1))
    done
  done
}
__flowsh_test() {
  # 0 when $1 is a test without side effects: `[`, `[[`, `test`, `command -v/-V`, `type`,
  # `declare -F`, `true`, `false`, with no redirection but to /dev/null or another descriptor.
  local c=$1
  case $c in
    \[\ *|\[\[\ *|test\ *|command\ -[vV]\ *|type\ *|declare\ -F*|typeset\ -F*) ;;
    true|false) return 0 ;;
    # `(( BASH_VERSINFO[0] >= 5 ))`: no assignment, increment or command in it.
    \(\(*\)\))
      [[ $c != *'<<='* && $c != *'>>='* ]] || return 1
      c=${c//[=!<>]=/}
      [[ $c != *[=\`]* && $c != *'$('* && $c != *++* && $c != *--* ]]
      return ;;
    *) return 1 ;;
  esac
  c=${c//[0-9]>&[0-9]/}; c=${c//>&[0-9]/}
  c=${c//&>\/dev\/null/}; c=${c//[0-9]>\/dev\/null/}; c=${c//>\/dev\/null/}
  c=${c//[0-9]> \/dev\/null/}; c=${c//> \/dev\/null/}
  [[ $c != *[\<\>]* || $c == \[\[\ * ]]
}
__flowsh_literal() {
  # 0 when $1 expands to nothing but its own words: no `$`, backquote or redirection but to
  # /dev/null or a descriptor (so replaying or running it runs no command, whatever the
  # variables hold: `${X:$Y}` evaluates $Y's value as arithmetic, which can run one).
  local c=$1
  c=${c//[0-9]>&[0-9]/}; c=${c//>&[0-9]/}
  c=${c//&>\/dev\/null/}; c=${c//[0-9]>\/dev\/null/}; c=${c//>\/dev\/null/}
  c=${c//[0-9]> \/dev\/null/}; c=${c//> \/dev\/null/}
  [[ $c != *[\$\`\<\>]* ]]
}
__flowsh_set() {
  # `set` is applied after the file (its options would change the guard's own reading):
  # as written when literal, else its leading options only (`set -e -- "$(cmd)"` keeps -e,
  # drops the operands), so replaying it never runs a command.
  local c=$1 keep=set i=0 w
  if __flowsh_literal "$c"; then __flowsh_sets+=("$c"); return; fi
  local -a ws
  IFS=$' \t' read -ra ws <<<"${c#set}"
  while (( i < ${#ws[@]} )); do
    w=${ws[i]}
    if [[ $w =~ ^[-+][a-zA-Z]*o$ && ${ws[i+1]-} =~ ^[a-z]+$ ]]; then
      keep+=" $w ${ws[i+1]}"; i=$((i + 1))
    elif [[ $w =~ ^[-+][a-np-zA-Z]+$ ]]; then
      keep+=" $w"
    else
      break
    fi
    i=$((i + 1))
  done
  [[ $keep == set ]] || __flowsh_sets+=("$keep")
}
__flowsh_same_defs() {
  # Steps read the file for its definitions with the run's final values (SOURCE-2): a
  # top-level `if`/`case` choosing a function on a value the file changes afterwards
  # (`case $_os in Linux) f() ..;; esac; unset _os`) would give them another function
  # than bash defines. Read it again that way and compare; a difference is refused.
  local file=$1 now again n line
  now=$(declare -f)
  [[ $now != "$__flowsh_fb" ]] || return 0
  again=$(
    for n in $(compgen -A function); do
      [[ $n == __flowsh_* ]] || unset -f "$n"
    done
    eval "$__flowsh_fb"
    __flowsh_defs=1
    set -- "${__flowsh_argv[@]}"
    { __flowsh_source "$@"; trap __flowsh_guard DEBUG; builtin source "$file"; trap - DEBUG
    } >/dev/null 2>&1
    declare -f
  )
  [[ $again != "$now" ]] || return 0
  for n in $(compgen -A function); do
    [[ $n == __flowsh_* ]] && continue
    [[ $again == *"$(declare -f "$n")"* ]] && continue
    # `declare -F` under extdebug: "NAME LINE FILE", where the function was defined.
    line=$(shopt -s extdebug; declare -F "$n")
    line=${line#"$n "}
    printf 'flowsh: %s:%s: %s\n' "${line#* }" "${line%% *}" "function $n is chosen by a\
 top-level if/case on a value the file changes afterwards; steps read the file for its\
 definitions with the run's final values (SOURCE-2) and would get another $n: keep the\
 value the choice depends on, or choose inside the function (SOURCE-1)" >&2
    return 1
  done
  printf 'flowsh: %s: %s\n' "$file" "a top-level if/case chooses functions on a value the\
 file changes afterwards; steps would get other definitions than bash's (SOURCE-1)" >&2
  return 1
}
__flowsh_refuse() {
  # A top-level command flowsh can neither run nor skip: the file is refused (FILE:LINE).
  printf 'flowsh: %s:%s: %s\n' "$1" "$2" "$3" >&2
  __flowsh_refused=1
  return 2
}
__flowsh_guard() {
  # DEBUG trap while a file is sourced: 0 runs the command, 1 skips it, 2 stops reading.
  [[ ${FUNCNAME[1]-} == source ]] || return 0
  local cmd=$BASH_COMMAND line=${BASH_LINENO[0]} file=${BASH_SOURCE[1]} rc=1 text
  [[ -z $__flowsh_refused ]] || return 2
  if [[ $BASH_SUBSHELL != "$__flowsh_subshell" ]]; then
    # A subshell at the top level runs only as a command substitution of the command the
    # guard let run (`DIR=$(dirname ..)`: same file, same line); a `( ... )` or `cmd &`
    # never does.
    [[ $__flowsh_ok == "$file:$line" ]] || return 1
    [[ -z ${__flowsh_probe-} ]] && return 0
    # Probing (validate, import): only what cannot change anything, so `DIR=$(dirname ..)`
    # still finds a nested file; `X=$(cmd)` waits for the run (SOURCE-2).
    [[ $cmd != *[\<\>]* ]] || return 1
    case $cmd in
      dirname\ *|basename\ *|cd\ *|pwd|pwd\ *|realpath\ *|readlink\ *|echo\ *|printf\ *)
        return 0 ;;
    esac
    return 1
  fi
  __flowsh_ok=
  case $cmd in
    source\ *\<\(*|.\ *\<\(*)
      __flowsh_refuse "$file" "$line" "sourcing a command's output (\`$cmd\`) would run\
 that command in every step; a library is read for its definitions only (SOURCE-1)"
      return 2 ;;
  esac
  if [[ -n ${__flowsh_defs-} ]]; then
    # Definitions only: the run evaluated the file's assignments once (FLOWSH_LIBRARY_STATE).
    # Checked before the general case below, which lets declarations run. Not counted as a
    # skipped command: a loop of assignments is no reason to stop reading. `:` only assigns
    # defaults (`: "${X:=a}"`), evaluated with the assignments.
    case $cmd in
      declare\ -f*|declare\ -F*|typeset\ -f*) return 0 ;;
      declare|declare\ *|typeset\ *|export\ *|readonly\ *|local\ *|unset\ *) return 1 ;;
      :|:\ *) return 1 ;;
    esac
    __flowsh_assign_only "$cmd" && return 1
  fi
  case $cmd in
    shopt\ *)
      # `shopt -u extdebug` (or `-o functrace`, or a name held in a variable) would switch
      # this guard off: every later top-level command would run.
      if ! __flowsh_literal "$cmd" || [[ $cmd == *extdebug* || $cmd =~ \ -[a-z]*o ]]; then
        __flowsh_refuse "$file" "$line" "\`$cmd\` would change how flowsh reads the file\
 (extdebug, set options); a library read for its definitions may set other shell options\
 only, named literally (SOURCE-1)"
        return 2
      fi ;;
    unset\ *)
      # Unsetting FUNCNAME or a BASH_* variable takes its meaning away, and the guard's.
      if [[ $cmd =~ FUNCNAME|BASH_|__flowsh_ ]] || ! __flowsh_literal "$cmd"; then
        __flowsh_refuse "$file" "$line" "\`$cmd\` would change how flowsh reads the file;\
 a library may not unset a variable named by another variable, FUNCNAME, BASH_* or\
 __flowsh_* at its top level (SOURCE-1)"
        return 2
      fi ;;
  esac
  case $cmd in
    declare|declare\ *|typeset\ *|export\ *|readonly\ *|local\ *|unset\ *) rc=0 ;;
    shopt\ *|umask|umask\ *) rc=0 ;;
    source\ *|.\ *) rc=0 ;;
    set\ *) __flowsh_set "$cmd"; return 1 ;;
    # `: "${X:=default}"`; not `: > "$LOG"` nor `: "$(cmd)"`, which would do something.
    :|:\ *) [[ $cmd != *[\<\>\`]* && $cmd != *'$('* ]] && rc=0 ;;
    # A top-level loop or case runs; the commands in it are guarded one by one.
    for\ *) __flowsh_skipped=(); rc=0 ;;
    case\ *) rc=0 ;;
  esac
  if (( rc != 0 )); then
    __flowsh_assign_only "$cmd" && rc=0
  fi
  if (( rc != 0 )) && __flowsh_test "$cmd"; then
    rc=0
  fi
  if (( rc == 0 )); then
    [[ $cmd != *'$('* && $cmd != *\`* ]] || __flowsh_ok="$file:$line"
    return 0
  fi
  # A skipped command reports success: the test of a top-level `if` must be one that runs.
  if [[ $__flowsh_lines_of != "$file" ]]; then
    mapfile -t __flowsh_lines <"$file" 2>/dev/null
    __flowsh_lines_of=$file
  fi
  text=${__flowsh_lines[line - 1]-}
  # A test continued from the lines above (`if [ -r f ] &&` / `  grep -q x f; then`).
  local at=$((line - 1)) word=${cmd%%[[:space:]]*}
  local cont='(&&|\|\||\||\\|^[[:space:]]*(if|elif|!))[[:space:]]*$'
  while (( at > 0 )) && [[ ${__flowsh_lines[at - 1]} =~ $cont ]]; do
    at=$((at - 1)); text="${__flowsh_lines[at]%\\} $text"
  done
  # `((` is a word of its own, not a parenthesis to blank.
  [[ $word == '(('* ]] && word='(('
  # Between `if`/`elif` and `then` on the command's line (not `if [ .. ]; then usage; fi`).
  local re='(^|[;&|({[:space:]])(if|elif)[[:space:]](.*)$'
  if [[ $text =~ $re ]] && text=${BASH_REMATCH[3]%%then*} &&
     { [[ " ${text//[;&|!()]/ } " == *" $word "* ]] ||
       [[ $word == '((' && $text == *'(('* ]]; }; then
    __flowsh_refuse "$file" "$line" "the test of a top-level \`${BASH_REMATCH[2]}\` runs a\
 command (\`$cmd\`), which a library read for its definitions must not (SOURCE-1); test\
 with [, [[, test, (( )) without assignment, command -v or type, or move the\
 \`if\` into a function"
    return 2
  fi
  local key="$file:$line:$cmd"
  if [[ -n ${__flowsh_skipped[$key]-} ]]; then
    printf 'flowsh: %s:%s: a top-level loop; stopped reading the file here\n' \
      "$file" "$line" >&2
    __flowsh_stopped=1
    return 2
  fi
  __flowsh_skipped[$key]=1
  return 1
}
__flowsh_source() {
  # Prepare, then the caller runs `builtin source FILE` at top level (so `declare` in the
  # file makes globals, as with a plain `source`), then `__flowsh_sourced $?`.
  # $(set +o) reports errexit as off (command substitutions clear it): keep $- too.
  # "$@": the caller's positional parameters, which the file sees (re-read with them).
  __flowsh_argv=("$@")
  __flowsh_opts=$(set +o; shopt -p extdebug || :)
  __flowsh_e=${-//[^e]/}
  set +euo pipefail
  __flowsh_sets=()
  __flowsh_stopped=
  __flowsh_refused=
  __flowsh_ok=
  __flowsh_lines_of=
  declare -gA __flowsh_skipped=()
  __flowsh_subshell=$BASH_SUBSHELL
  # What the file changes in the functions, to compare with a definitions-only reading.
  [[ -n ${__flowsh_defs-} ]] || __flowsh_fb=$(declare -f)
  shopt -s extdebug
}
__flowsh_sourced() {
  local rc=$1 file=$2 s
  eval "$__flowsh_opts"
  if [[ -n $__flowsh_e ]]; then set -e; fi
  for s in "${__flowsh_sets[@]}"; do eval "$s"; done
  if (( rc == 1 )) && [[ ! -r $file ]]; then
    printf 'flowsh: cannot read %s\n' "$file" >&2
    exit 2
  fi
  if [[ -n $__flowsh_refused ]]; then
    exit 2
  fi
  if [[ -z ${__flowsh_defs-} && -r $file ]] && ! __flowsh_same_defs "$file"; then
    exit 2
  fi
  # A plain `source` returns its last command's status (`[ -r conf ] && . conf`, or
  # `[[ ${BASH_SOURCE[0]} == "$0" ]] && main "$@"` at the end): only a file bash cannot
  # parse has failed to load.
  if (( rc != 0 )) && [[ -z $__flowsh_stopped ]] && ! "$BASH" -n "$file" 2>/dev/null; then
    exit "$rc"
  fi
  return 0
}
"""

_CLEANUP = (
    "unset -f __flowsh_assign_only __flowsh_test __flowsh_refuse __flowsh_guard "
    "__flowsh_source __flowsh_sourced __flowsh_literal __flowsh_set __flowsh_same_defs; "
    "unset __flowsh_opts __flowsh_sets __flowsh_skipped __flowsh_subshell __flowsh_stopped "
    "__flowsh_rc __flowsh_e __flowsh_defs __flowsh_probe __flowsh_refused __flowsh_ok "
    "__flowsh_lines __flowsh_lines_of __flowsh_fb __flowsh_argv"
)
