#!/usr/bin/env bash
# Turns the ```cpp blocks of a Markdown file into one C++ file, so that a snippet that no
# longer compiles as pasted fails the test build (issue 22).
#   readme_snippets.sh README.md OUT.cpp
# Each block's #include lines go to the top. At brace depth 0, a line that starts a
# declaration (struct, class, enum, namespace, using, template, TEST_CASE) stays at file
# scope up to its closing brace or semicolon; the other lines are statements and go into a
# function of their own, readme_snippet_N(), which is compiled but never called.
# What the snippets leave to the reader (my_app::sign_up) is in tests/docs/readme_stubs.hpp.
# Plain bash + awk: the test image has no Python.
set -euo pipefail
export LC_ALL=C
in="$1"
out="$2"

awk -v src="$in" '
  function mark() { return "#line " NR " \"" src "\"\n" }
  function depth_change(s,   t, opens, closes) {
    t = s
    gsub(/"([^"\\]|\\.)*"/, "", t)     # braces in string literals do not count
    gsub(/\/\/.*/, "", t)              # nor in comments
    opens = gsub(/[{(]/, "", t)
    closes = gsub(/[})]/, "", t)
    return opens - closes
  }
  /^```cpp[ \t]*$/ { fence = 1; n++; depth = 0; scope = ""; next }
  fence && /^```/ { fence = 0; next }
  !fence { next }
  /^#include/ { includes = includes $0 "\n"; next }
  {
    if (depth == 0) {
      if ($0 ~ /^[ \t]*$/) next
      scope = ($0 ~ /^(struct|class|enum|namespace|using|template|TEST_CASE)[ (]/) ? "file" : "body"
    }
    # a #line where a run of lines starts, so errors point at the README
    if (scope == "file") { if (NR != last_decl + 1) decls = decls mark(); decls = decls $0 "\n"; last_decl = NR }
    else { if (NR != last_body[n] + 1) body[n] = body[n] mark(); body[n] = body[n] $0 "\n"; last_body[n] = NR }
    depth += depth_change($0)
  }
  END {
    if (n == 0) { print "no ```cpp blocks in " src > "/dev/stderr"; exit 1 }
    printf "// Generated from %s by tests/docs/readme_snippets.sh: do not edit.\n", src
    printf "%s", includes
    print "#pragma GCC diagnostic ignored \"-Wunused-variable\"  // fragments name values they only show"
    print "#include \"docs/readme_stubs.hpp\""
    printf "%s", decls
    for (i = 1; i <= n; i++) {
      if (body[i] == "") continue
      printf "void readme_snippet_%d();\nvoid readme_snippet_%d() {\n%s}\n", i, i, body[i]
    }
  }' "$in" > "$out.tmp"
mv "$out.tmp" "$out"
