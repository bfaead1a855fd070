#!/usr/bin/env bash
# Checks the Markdown documentation (README.md, docs/*.md, backends/*/README.md).
#   check_docs.sh SOURCE_DIR links    every relative link names a file that exists, and every
#                                     #anchor a heading of that file (GitHub's heading ids)
#   check_docs.sh SOURCE_DIR commands README opens with its two set-up commands, and the second
#                                     is the script CI runs (.ci/run)
# Plain bash + awk, so it runs wherever the tests do (no Python in the test image).
set -euo pipefail
export LC_ALL=C
root="$1"
mode="$2"
cd "$root"

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# Prints "line<TAB>target" for every inline link [text](target) outside code.
links_of() {
  awk '
    /^[ \t]*```/ { fence = !fence; next }
    fence { next }
    {
      line = $0
      gsub(/`[^`]*`/, "", line)            # code spans are not links
      while (match(line, /\]\([^)]*\)/)) {
        target = substr(line, RSTART + 2, RLENGTH - 3)
        sub(/[ \t].*/, "", target)         # drop a "title"
        print NR "\t" target
        line = substr(line, RSTART + RLENGTH)
      }
    }' "$1"
}

# Prints the GitHub id of every heading of a Markdown file, one a line ("-1", "-2" on repeats).
anchors_of() {
  awk '
    /^[ \t]*```/ { fence = !fence; next }
    fence || !/^#+ / { next }
    {
      h = $0
      sub(/^#+ +/, "", h); sub(/ +#+ *$/, "", h)
      h = tolower(h)
      gsub(/[^a-z0-9 _-]/, "", h)          # GitHub drops punctuation (and, here, non-ASCII)
      gsub(/ /, "-", h)
      id = (h in seen) ? h "-" seen[h] : h
      seen[h]++
      print id
    }' "$1"
}

check_links() {
  local files=(README.md docs/*.md backends/*/README.md)
  local checked=0 file line target path anchor resolved dir
  for file in "${files[@]}"; do
    [ -f "$file" ] || continue
    dir=$(dirname "$file")
    while IFS=$'\t' read -r line target; do
      case "$target" in
        http://* | https://* | mailto:*) continue ;;
      esac
      checked=$((checked + 1))
      path="${target%%#*}"
      anchor=""
      [[ "$target" == *"#"* ]] && anchor="${target#*#}"
      if [ -z "$path" ]; then
        resolved="$file"
      else
        resolved="$dir/$path"
        if [ ! -e "$resolved" ]; then
          fail "$file:$line: link to '$target': no file $resolved"
          continue
        fi
      fi
      if [ -n "$anchor" ] && [[ "$resolved" == *.md ]]; then
        if ! anchors_of "$resolved" | grep -qxF -- "$anchor"; then
          fail "$file:$line: link to '$target': $resolved has no heading with id '$anchor'"
        fi
      fi
    done < <(links_of "$file")
  done
  echo "checked $checked relative links in ${#files[@]} files"
}

# The first two code blocks of README.md, before any section, are the two set-up commands.
check_commands() {
  local blocks
  blocks=$(awk '
    BEGIN { n = 0 }
    NR == 1 { next }                       # the title
    /^#/ && !fence { exit }                # the first section ends the opening
    /^```/ { fence = !fence; if (!fence) n++; next }
    fence { print n "\t" $0 }' README.md)
  local first second count
  count=$(printf '%s\n' "$blocks" | awk -F'\t' 'NF { print $1 }' | sort -u | wc -l)
  first=$(printf '%s\n' "$blocks" | awk -F'\t' '$1 == 0 { print $2 }')
  second=$(printf '%s\n' "$blocks" | awk -F'\t' '$1 == 1 { print $2 }')
  [ "$count" -eq 2 ] || fail "README.md opens with $count code blocks before its first section, not 2"
  [ "$first" = "./scripts/quickstart.sh" ] || fail "README.md's first command is '$first', not ./scripts/quickstart.sh"
  [ "$second" = "./scripts/test.sh" ] || fail "README.md's second command is '$second', not ./scripts/test.sh"
  local script
  for script in scripts/quickstart.sh scripts/test.sh; do
    [ -x "$script" ] || fail "$script is not executable (README runs it as ./$script)"
  done
  grep -qx 'exec bash scripts/test.sh' .ci/run ||
    fail ".ci/run does not run scripts/test.sh, the README's test command"
  echo "README opens with: $first; $second"
}

case "$mode" in
  links) check_links ;;
  commands) check_commands ;;
  *) echo "usage: $0 SOURCE_DIR links|commands" >&2; exit 2 ;;
esac
[ "$failures" -eq 0 ] || { echo "$failures problem(s)" >&2; exit 1; }
