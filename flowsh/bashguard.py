"""The guard bash runs while it sources a `source:` library (see `flowsh.bashlib`).

A DEBUG trap (``extdebug``) decides for each simple command at the file's top level:

* runs: assignments and ``declare/typeset/export/readonly/local/unset`` (skipped in
  definitions-only mode: the run evaluated them once, SOURCE-2), ``: "${X:=a}"`` without a
  redirection or command substitution, ``source``/``.`` (the file guarded the same way),
  ``shopt`` named literally, ``umask``, the header of a ``for`` or ``case`` (the commands
  in it are guarded one by one), and tests without side effects (``[``, ``[[``, ``test``,
  ``command -v``, ``type``, ``declare -F``, ``true``, ``false``, ``(( ))`` without assignment) so a
  top-level ``if``/``&&`` takes bash's branch; ``set ...`` is replayed after the file, as
  written when literal, else its leading options only (the replay runs no command). The
  trap sees a command's text before expansion, so of these only assignments and
  declarations may hold a command substitution (evaluated once per run), a ``source`` one
  made of the probing commands below; none may redirect (outside its substitutions) but to
  /dev/null or a descriptor; a name defined as a function in the file is a call (skipped).
* a subshell at the top level (``( ... )``, ``cmd &``, a pipeline's side) runs only as a
  command substitution of the command the guard let run on that line (``DIR=$(dirname ..)``,
  its command part of that command's text);
  when probing (validate, import: ``__flowsh_probe``) only one made of dirname, basename,
  cd, pwd, realpath, readlink, echo, printf.
* refused (exit 2, FILE:LINE): a top-level ``if``/``elif`` whose test is any other command
  (a skipped command reports success, so its branch would be a lie; continued lines too),
  ``source <(cmd)``, a ``shopt`` that would switch the guard off (``extdebug``, ``-o``, a
  variable), ``unset`` of FUNCNAME, BASH_*, __flowsh_* or a variable's value, any use of
  a ``__flowsh`` name, a ``case``/``for`` header running a command, a redirected ``source``,
  a skipped command followed by ``&&``/``||`` and something the guard runs, a redirection on
  a top-level compound command (found before reading, ``__flowsh_scan``: bash performs it
  before the trap sees anything inside); and, after
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
      if [[ $c != [\\\"\'\`\$\(\)\{\}\<\>[:space:]] ]]; then
        # A run of plain characters in one step: bash copies $s for every ${s:i:1}, so
        # going char by char made a 140 KB value take minutes.
        c=${s:i}; c=${c%%[\\\"\'\`\$\(\)\{\}\<\>[:space:]]*}; i=$((i + ${#c}))
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
        # `X=1 >f`: a redirection (it would create f); `<(..)` too.
        :\<|:\>) return 1 ;;
      esac
      i=$((i + 1))
    done
  done
}
__flowsh_test() {
  # 0 when $1 is a test without side effects: `[`, `[[`, `test`, `command -v/-V`, `type`,
  # `declare -F`, `true`, `false`, with no command or process substitution and no
  # redirection but to /dev/null or another descriptor (the DEBUG trap sees the text before
  # expansion: `[ -z "$(cmd)" ]` would run cmd).
  local c=$1
  [[ $c != *'$('* && $c != *\`* && $c != *'<('* && $c != *'>('* ]] || return 1
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
  # `[[ a < b ]]` compares; a `[[ .. ]] > f` redirection is not in its text (__flowsh_scan).
  [[ $c != *[\<\>]* || $c == \[\[\ * ]]
}
__flowsh_quiet() {
  # 0 when $1, outside quotes and substitutions, redirects nothing but to /dev/null or a
  # descriptor (`declare -f f > funcs.txt` would write a file in every step, and validate).
  local c=$1 out= q
  while [[ -n $c ]]; do
    case $c in
      \'*) q=${c:1}; [[ $q == *\'* ]] || return 1; c=${q#*\'} ;;
      \"*) q=${c:1}; while [[ $q == *\\\"* && ${q%%\"*} == *\\ ]]; do q=${q#*\"}; done
           [[ $q == *\"* ]] || return 1; c=${q#*\"} ;;
      *) out+=${c:0:1}; c=${c:1} ;;
    esac
  done
  out=${out//[0-9]>&[0-9]/}; out=${out//>&[0-9]/}
  out=${out//&>\/dev\/null/}; out=${out//[0-9]>\/dev\/null/}; out=${out//>\/dev\/null/}
  out=${out//[0-9]> \/dev\/null/}; out=${out//> \/dev\/null/}
  [[ $out != *[\<\>]* ]]
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
      unset -f . source
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
__flowsh_scan() {
  # 1 (and a FILE:LINE message) when a top-level compound command of file $1 carries a
  # redirection that writes or runs something (`{ ..; } > "$LOG"`, `[[ .. ]] > f`,
  # `done < <(cmd)`): bash performs it before the DEBUG trap sees a command inside, so it
  # would happen in every step. Read with bash's own parser: the file as the body of a
  # function defined but never called, printed back by `declare -f`.
  local file=$1 body l ind= re rd red op word bad= closer n at
  local -a got
  [[ -r $file ]] || return 0
  body=$(
    __flowsh_w=$'__flowsh_parse() {\n'"$(<"$file")"$'\n}'
    __flowsh_once=
    __flowsh_only() {
      # A file closing the function early would run its next command here: stop instead.
      if [[ -z $__flowsh_once && $BASH_COMMAND == 'eval "$__flowsh_w"' ]]; then
        __flowsh_once=1
        return 0
      fi
      [[ $BASH_COMMAND == 'declare -f __flowsh_parse' ]] || exit 97
    }
    shopt -s extglob
    trap __flowsh_only DEBUG
    eval "$__flowsh_w"
    declare -f __flowsh_parse
  ) 2>/dev/null || return 0
  mapfile -t got <<<"$body"
  re='^[[:space:]]+(\}|fi|done|esac|\)|(\[\[|\(\(|\().*(\]\]|\)\)|\)))[[:space:]]+'
  re+='(([0-9]*|&)(>|<|<<<|<<)[^;]*);?$'
  # One redirection: descriptor, operator, word; then the rest.
  rd='^([0-9]*|&)(>>|>\||<>|<<<|<<-?|>&|<&|>|<)[[:space:]]*'
  rd+=$'("[^"]*"|\'[^\']*\'|[^[:space:]]+)[[:space:]]*(.*)$'
  for l in "${got[@]}"; do
    if [[ -n $ind ]]; then
      # Inside a function's body: a redirection there happens when it is called.
      [[ $l != "$ind}"* ]] || ind=
      continue
    fi
    if [[ $l =~ ^([[:space:]]+)function\ [^[:space:]]+\ \(\)\ ?$ ]]; then
      ind=${BASH_REMATCH[1]}
      continue
    fi
    [[ $l =~ $re ]] || continue
    closer=${BASH_REMATCH[1]} red=${BASH_REMATCH[4]}
    (( ${#closer} < 5 )) || closer=${closer: -2}
    closer=${closer//[[:space:]]/}
    while [[ -n $red ]]; do
      [[ $red =~ $rd ]] || break
      op=${BASH_REMATCH[2]} word=${BASH_REMATCH[3]} red=${BASH_REMATCH[4]}
      case $op in
        '>&'|'<&') [[ $word =~ ^[0-9]*-?$ ]] || bad="$op $word" ;;
        '<'|'<<<') [[ $word != *'$('* && $word != *\`* && $word != '<('* ]] || bad="$op $word" ;;
        '<<'|'<<-') [[ $word == [\'\"\\]* ]] || bad="$op$word" ;;
        *) [[ $word == /dev/null ]] || bad="$op $word" ;;
      esac
      [[ -z $bad ]] || break
    done
    [[ -n $bad ]] && break
  done
  [[ -n $bad ]] || return 0
  mapfile -t got <"$file"
  # The parser keeps no line numbers: the line is found by its text, first outside what
  # looks like a function's body (`f() {` .. a `}` as indented; a one-line `f() { ..; }`),
  # which may hold the same text, then anywhere.
  local -a infn=()
  local fre='^([[:space:]]*)(function[[:space:]]+[^[:space:]()]+([[:space:]]*\(\))?|'
  fre+='[A-Za-z_][A-Za-z0-9_:.-]*[[:space:]]*\(\))[[:space:]]*(\{.*)?$'
  ind=
  for ((n = 0; n < ${#got[@]}; n++)); do
    if [[ -n $ind ]]; then
      infn[n]=1
      [[ ${got[n]} != "${ind#x}}"* ]] || ind=
    elif [[ ${got[n]} =~ $fre ]]; then
      infn[n]=1
      [[ ${got[n]} =~ \}[[:space:]]*(\;[[:space:]]*)?$ ]] || ind=x${BASH_REMATCH[1]}
    fi
  done
  for at in skip any; do
    for l in "$closer${bad//[[:space:]]/}" "${bad//[[:space:]]/}" "${word//[[:space:]]/}"; do
      for ((n = 0; n < ${#got[@]}; n++)); do
        [[ $at == any || -z ${infn[n]-} ]] || continue
        [[ ${got[n]//[[:space:]]/} != *"$l"* ]] || break 3
      done
    done
  done
  (( n < ${#got[@]} )) && n=$((n + 1)) || n='?'
  printf 'flowsh: %s:%s: %s\n' "$file" "$n" "a redirection (\`$bad\`) on a top-level\
 compound command ({ }, [[ ]], ( ), if, while, for, case) is performed before flowsh sees\
 the commands inside: it would happen in every step; a library read for its definitions\
 must not write or run commands at its top level (move it into a function, SOURCE-1)" >&2
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
  local cmd=$BASH_COMMAND line=${BASH_LINENO[0]} file=${BASH_SOURCE[1]} rc=1 word
  [[ -z $__flowsh_refused ]] || return 2
  if [[ $BASH_SUBSHELL != "$__flowsh_subshell" ]]; then
    # A subshell at the top level runs only as a command substitution of the command the
    # guard let run (`DIR=$(dirname ..)`: same file, same line); a `( ... )` or `cmd &`
    # never does.
    [[ $__flowsh_ok == "$file:$line" ]] || return 1
    # Part of that command's text (`STAMP=$(date +%s); ( backup )`: the subshell is not).
    [[ ${__flowsh_okcmd//[[:space:]]/} == *"${cmd//[[:space:]]/}"* ]] || return 1
    # A `source` runs in every step: only these in its substitution, as when probing.
    [[ -z ${__flowsh_probe-}$__flowsh_oksafe ]] && return 0
    # Probing (validate, import): only what cannot change anything, so `DIR=$(dirname ..)`
    # still finds a nested file; `X=$(cmd)` waits for the run (SOURCE-2).
    [[ $cmd != *[\<\>]* ]] || return 1
    case $cmd in
      dirname\ *|basename\ *|cd\ *|pwd|pwd\ *|realpath\ *|readlink\ *|echo\ *|printf\ *)
        return 0 ;;
    esac
    return 1
  fi
  __flowsh_ok= __flowsh_okcmd= __flowsh_oksafe=
  word=${cmd%%[[:space:]]*}
  if [[ $cmd == *__flowsh* ]]; then
    # `__flowsh_probe=` would switch validate's probing off: the guard's names are its own.
    __flowsh_refuse "$file" "$line" "\`$cmd\`: names starting with __flowsh are flowsh's\
 own; a library may not use them (SOURCE-1)"
    return 2
  fi
  case $cmd in
    source\ *\<\(*|.\ *\<\(*)
      __flowsh_refuse "$file" "$line" "sourcing a command's output (\`$cmd\`) would run\
 that command in every step; a library is read for its definitions only (SOURCE-1)"
      return 2 ;;
    source\ *|.\ *)
      if ! __flowsh_quiet "$cmd"; then
        __flowsh_refuse "$file" "$line" "a redirection on a top-level \`$word\` (\`$cmd\`)\
 would be performed in every step; a library read for its definitions must not write at\
 its top level (redirect inside the sourced file's functions, or to /dev/null; SOURCE-1)"
        return 2
      fi ;;
    case\ *|for\ *)
      if [[ $cmd == *'$('* || $cmd == *\`* || $cmd == *'<('* ]]; then
        __flowsh_refuse "$file" "$line" "the header of a top-level \`$word\` runs a command\
 (\`$cmd\`), which a library read for its definitions must not, in every step\
 (SOURCE-1); compute the value in an assignment first (\`X=\$(cmd)\`, evaluated once\
 per run), or move the \`$word\` into a function"
        return 2
      fi ;;
  esac
  # A function named like a command the guard lets run (`test() { ..; }`, then `test -d .`)
  # would run in its place: such a command is a call, skipped like any other.
  if [[ $word != *=* && $word != source && $word != . ]] &&
     declare -F -- "$word" >/dev/null 2>&1; then
    __flowsh_skip "$file" "$line" "$cmd" "$word"
    return
  fi
  if [[ -n ${__flowsh_defs-} ]]; then
    # Definitions only: the run evaluated the file's assignments once (FLOWSH_LIBRARY_STATE).
    # Checked before the general case below, which lets declarations run. Not counted as a
    # skipped command: a loop of assignments is no reason to stop reading. `:` only assigns
    # defaults (`: "${X:=a}"`), evaluated with the assignments.
    case $cmd in
      declare\ -f*|declare\ -F*|typeset\ -f*) __flowsh_quiet "$cmd" && return 0 ;;
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
      # `unset -f . source` would remove the wrappers that scan a nested file.
      if [[ $cmd =~ FUNCNAME|BASH_|__flowsh_|[[:space:]](source|\.)([[:space:]]|$) ]] ||
         ! __flowsh_literal "$cmd"; then
        __flowsh_refuse "$file" "$line" "\`$cmd\` would change how flowsh reads the file;\
 a library may not unset a variable named by another variable, FUNCNAME, BASH_*,\
 __flowsh_*, or the functions source and . at its top level (SOURCE-1)"
        return 2
      fi ;;
  esac
  case $cmd in
    # Not with a redirection (`declare -f f > funcs.txt`, `umask 022 > x`): skipped.
    declare|declare\ *|typeset\ *|export\ *|readonly\ *|local\ *|unset\ *)
      __flowsh_quiet "$cmd" && rc=0 ;;
    shopt\ *|umask|umask\ *) __flowsh_quiet "$cmd" && rc=0 ;;
    source\ *|.\ *) rc=0; __flowsh_oksafe=1 ;;
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
    if [[ $cmd == *'$('* || $cmd == *\`* ]]; then
      __flowsh_ok="$file:$line" __flowsh_okcmd=$cmd
    fi
    return 0
  fi
  __flowsh_skip "$file" "$line" "$cmd" "$word"
}
__flowsh_skip() {
  # Skip command $3 (file $1, line $2, command word $4): 1, or 2 when that is refused.
  local file=$1 line=$2 cmd=$3 word=$4 text
  # A skipped command reports success: the test of a top-level `if` must be one that runs.
  if [[ $__flowsh_lines_of != "$file" ]]; then
    mapfile -t __flowsh_lines <"$file" 2>/dev/null
    __flowsh_lines_of=$file
  fi
  text=${__flowsh_lines[line - 1]-}
  # A test continued from the lines above (`if [ -r f ] &&` / `  grep -q x f; then`).
  local at=$((line - 1))
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
  # `grep -q x f && IS_X=1`: a skipped command reports success, so what follows `&&` would
  # run when bash might not run it (and `||` the reverse): refused when that is something
  # the guard runs (an assignment, a declaration, a test, a source, a group...).
  if __flowsh_listed "${__flowsh_lines[line - 1]-}" "$word" "${__flowsh_lines[line]-}"; then
    __flowsh_refuse "$file" "$line" "\`$cmd\` is skipped (a library's top-level commands\
 do not run; it reports success) and decides with $REPLY what runs after it, so the result\
 would not be bash's (SOURCE-1); test with [, [[, test, (( )), command -v or type, or move\
 the list into a function"
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
__flowsh_listed() {
  # 0 when, in line $1, command word $2 is followed by `&&`/`||` (REPLY) and then by what
  # the guard would run (on that line, or the next one $3 when the line ends there).
  local t=" $1" w=$2 q rest
  # Quoted strings hold no operator (their `=` kept: `: "${X:=a}"` assigns).
  while [[ $t =~ ^([^\'\"]*)(\'[^\']*\'|\"([^\"\\]|\\.)*\")(.*)$ ]]; do
    q=${BASH_REMATCH[2]}
    t="${BASH_REMATCH[1]}q${q//[!=]/}${BASH_REMATCH[4]}"
  done
  [[ $t =~ [[:space:]\;\&\|\(\{!]"$w"([[:space:]]|$)(.*)$ ]] || return 1
  rest=${BASH_REMATCH[2]}
  [[ $rest =~ ^[^\;\&\|]*(\&\&|\|\|)(.*)$ ]] || return 1
  REPLY=${BASH_REMATCH[1]} rest=${BASH_REMATCH[2]}
  [[ $rest == *[![:space:]]* ]] || rest=$3
  q='^[[:space:]]*(!?[[:space:]]*)([A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=|[A-Za-z_][A-Za-z0-9_]*[[:space:]]*\(\)|(declare|typeset|export|readonly|local|unset|source|\.|shopt|umask|set|:[[:space:]][^;&|]*=[^;&|]*|\{|\(|\[|\[\[|test|true|false|command|type|if|case|for|while|until|function)([[:space:]]|$))'
  [[ $rest =~ $q ]]
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
  # A redirection on a top-level compound command cannot be skipped: refused before reading.
  __flowsh_scan "${__flowsh_file-}" || exit 2
  __flowsh_sets=()
  __flowsh_stopped=
  __flowsh_refused=
  __flowsh_ok= __flowsh_okcmd= __flowsh_oksafe=
  __flowsh_lines_of=
  declare -gA __flowsh_skipped=()
  __flowsh_subshell=$BASH_SUBSHELL
  # What the file changes in the functions, to compare with a definitions-only reading.
  [[ -n ${__flowsh_defs-} ]] || __flowsh_fb=$(declare -f)
  # A file the library sources itself (`. "$DIR/inner.sh"`) is scanned the same way before
  # bash reads it: only these wrappers see its expanded path. `source` goes through `.`,
  # whose commands the guard lets run (it guards a frame named `source` only).
  .() { __flowsh_scan "${1-}" || exit 2; builtin source "$@"; }
  source() { . "$@"; }
  shopt -s extdebug
}
__flowsh_sourced() {
  local rc=$1 file=$2 s ps4=${PS4-}
  unset -f . source
  # `set -x` traces each command and expands PS4 for it (`PS4='$(cmd)'` runs cmd): on
  # here, it would trace flowsh's own reading, evaluation and prelude (hundreds of
  # commands, a different count on each runtime; at validate too). Noted instead
  # (__flowsh_xtrace) and switched on right before the step's own text.
  PS4=
  {
    eval "$__flowsh_opts"
    if [[ -n $__flowsh_e ]]; then set -e; fi
    for s in "${__flowsh_sets[@]}"; do eval "$s"; done
    if [[ $- == *x* ]]; then set +x; __flowsh_xtrace+=x; fi
    # `set -v` likewise: on here, bash would echo the rest of flowsh's prelude.
    if [[ $- == *v* ]]; then set +v; __flowsh_xtrace+=v; fi
  } 2>/dev/null
  PS4=$ps4
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

# The step's last prelude line: a library's `set -x`/`set -v` (noted by `__flowsh_sourced`)
# traces or echoes the step's own commands only, as after a plain `source`.
# `set` last (its value is only x and v letters), so nothing of flowsh's is traced after it.
XTRACE_ON = ('[[ -z ${__flowsh_xtrace-} ]] || '
             'eval "unset __flowsh_xtrace; set -$__flowsh_xtrace"')

_CLEANUP = (
    "unset -f __flowsh_assign_only __flowsh_test __flowsh_refuse __flowsh_guard "
    "__flowsh_source __flowsh_sourced __flowsh_literal __flowsh_set __flowsh_same_defs "
    "__flowsh_scan __flowsh_quiet __flowsh_skip __flowsh_listed; "
    "unset __flowsh_opts __flowsh_sets __flowsh_skipped __flowsh_subshell __flowsh_stopped "
    "__flowsh_rc __flowsh_e __flowsh_defs __flowsh_probe __flowsh_refused __flowsh_ok "
    "__flowsh_lines __flowsh_lines_of __flowsh_fb __flowsh_argv __flowsh_okcmd __flowsh_oksafe"
)
