#!/usr/bin/env python3
# Generates tests/data/jinja_cases.jsonl: conformance fixtures for the C Jinja2
# interpreter (core/text/jinja*.c). Each case is a small template written for this
# file, rendered by Python jinja2 (3.1.x) in an environment that mirrors the one
# transformers uses for chat templates (plus finalize: a printed None renders "").
#
# Developers only (CI has no jinja2); the tests read the committed jsonl. Rerun with
#     python3 tests/tools/jinja_cases.py tests/data/jinja_cases.jsonl
# (with no argument it writes the jsonl to stdout).
#
# Output: one JSON object per line, keys in this order:
#     {"id", "template", "context", "rendered"}   the case renders
#     {"id", "template", "context", "error": true} jinja2 raises (compile or render)
# The context is a JSON object passed as keyword variables (render(**context)).
# Its key order is significant (dict iteration, tojson, repr) and Python's int/float
# distinction is kept by the number spelling (1 vs 1.0). Each case is rendered from
# json.loads of the very text written, so the expectation matches what the test
# side parses. Deterministic: no randomness, no time.
import json
import sys

import jinja2
import jinja2.exceptions


def make_env():
    env = jinja2.Environment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.loopcontrols"],
        finalize=lambda x: "" if x is None else x,
    )

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    env.filters["tojson"] = tojson

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    return env


CASES = []


def case(cid, template, context=None, error=False):
    """error=True: the case is meant to raise; the script checks jinja2 agrees."""
    CASES.append((cid, template, context or {}, error))


# ---------------------------------------------------------------- whitespace
case("ws_text_passthrough", "Hello, world!  \tTabs\tand  spaces  <|x|> {not a tag} %} }} #}")
case("ws_trailing_newline_dropped", "line1\nline2\n")
case("ws_two_trailing_newlines_keep_one", "a\n\n")
case("ws_no_trailing_newline", "a\nb")
case("ws_leading_newlines_kept", "\n\nx")
case("ws_expr_trailing_newline_dropped", "{{ x }}\n", {"x": 1})
case("ws_trim_blocks_not_after_expr", "{{ 'a' }}\n{{ 'b' }}\nc")
case("ws_trim_blocks_if", "{% if true %}\nyes\n{% endif %}\nafter")
case("ws_trim_blocks_one_newline_only", "{% if true %}\n\nx\n\n{% endif %}\n\ny")
case("ws_lstrip_blocks_spaces", "  {% if true %}\n    body\n  {% endif %}\nend")
case("ws_lstrip_blocks_tabs", "\t\t{% for i in [1, 2] %}\n\t{{ i }}\n \t{% endfor %}\n")
case("ws_lstrip_not_after_text", "x  {% if true %}y{% endif %}  z")
case("ws_lstrip_not_for_expr", "  {{ 1 }}\n  {{ 2 }}")
case("ws_dash_expr", "a  \n  {{- 'b' -}}  \n  c")
case("ws_dash_expr_one_side", "a  {{- 'b' }}  c  {{ 'd' -}}  \n e")
case("ws_dash_block", "a\n\n{%- if true -%}\n\n  b  \n{%- endif -%}\n\nc")
case("ws_dash_comment", "a \n  {#- note -#} \n b")
case("ws_comment_inline", "x{# hidden {{ y }} {% if %} #}z")
case("ws_comment_trim_blocks", "a\n{# comment #}\nb")
case("ws_comment_lstrip_blocks", "a\n    {# indented comment #}\nb\n  {# two\nlines #}\nc")
case("ws_plus_disables_lstrip", "  {%+ if true %}x{% endif %}\n  {% if true %}y{% endif %}")
case("ws_plus_disables_trim", "{% if true +%}\nx\n{% endif %}\ny")
case("ws_dash_keeps_string_inner_spaces", "[  {{- '  a  ' -}}  ]")
case("ws_multiline_tag", "{% if\n   true\n%}\nx{% endif\n%}\ny")
case("ws_for_lines", "{% for i in range(3) %}\n{{ i }}\n{% endfor %}\n")
case("ws_set_line", "{% set x = 1 %}\n{% set y = 2 %}\n{{ x }}+{{ y }}\n")
case("ws_crlf_normalized", "a\r\nb\r\n{% if true %}\r\nc\r\n{% endif %}\r\nd\r\n")
case("ws_raw_block", "{% raw %}{{ not }} {% evaluated %} {# kept #}{% endraw %}!")
case("ws_raw_trim", "  {% raw %}\n  {{ x }}\n  {% endraw %}\nafter")
case("ws_nested_indent_realistic",
     "<list>\n{% for x in xs %}\n  {% if x %}\n    <item>{{ x }}</item>\n  {% else %}\n"
     "    <empty/>\n  {% endif %}\n{% endfor %}\n</list>\n",
     {"xs": ["a", "", "b"]})

# ---------------------------------------------------------------- statements
case("if_elif_else",
     "{% for n in [0, 1, 2, 5] %}{% if n == 0 %}zero{% elif n == 1 %}one{% elif n < 3 %}few"
     "{% else %}many{% endif %};{% endfor %}")
case("if_nested", "{% if a %}{% if b %}ab{% else %}a{% endif %}{% else %}-{% endif %}",
     {"a": True, "b": False})
case("if_truthiness",
     "{% for v in vals %}{{ 'T' if v else 'F' }}{% endfor %}",
     {"vals": [0, 0.0, "", [], {}, None, "a", [0], 1, -1, {"k": 0}, " ", 0.5, False, True]})
case("if_undefined_is_false", "{% if missing %}yes{% else %}no{% endif %}"
     "{% if not missing %}!{% endif %}")
case("for_loop_vars",
     "{% for x in xs %}{{ x }}:{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/"
     "{{ loop.revindex0 }}/{{ loop.length }}/{{ loop.first }}/{{ loop.last }};{% endfor %}",
     {"xs": ["a", "b", "c"]})
case("for_else_empty", "{% for x in xs %}{{ x }}{% else %}none here{% endfor %}", {"xs": []})
case("for_else_nonempty", "{% for x in xs %}{{ x }}{% else %}none here{% endfor %}", {"xs": [1, 2]})
case("for_else_undefined", "{% for x in missing %}{{ x }}{% else %}nothing{% endfor %}")
case("for_filter_cond",
     "{% for x in xs if x > 1 %}{{ loop.index }}:{{ x }}{% if not loop.last %},{% endif %}"
     "{% endfor %}|{{ xs|length }}",
     {"xs": [3, 1, 4, 1, 5, 0]})
case("for_filter_all_rejected_else",
     "{% for x in xs if x is string %}{{ x }}{% else %}no strings{% endfor %}", {"xs": [1, 2.0, None]})
case("for_dict_items", "{% for k, v in d.items() %}{{ k }}={{ v }}{% if not loop.last %}&{% endif %}{% endfor %}",
     {"d": {"zeta": 1, "alpha": [1, 2], "mid": None}})
case("for_dict_keys_direct", "{% for k in d %}{{ loop.index }}{{ k }}{% endfor %}", {"d": {"b": 1, "a": 2}})
case("for_string_chars", "{% for c in 'héllo' %}[{{ c }}]{% endfor %}")
case("for_unpack_pairs", "{% for a, b in [[1, 'x'], [2, 'y']] %}{{ a }}{{ b }} {% endfor %}")
case("for_nested_outer_index",
     "{% for row in rows %}{% set r = loop.index0 %}{% for cell in row %}"
     "({{ r }},{{ loop.index0 }})={{ cell }}{% if loop.last and not loop.first %};{% endif %}"
     "{% endfor %}{% endfor %}",
     {"rows": [[1, 2], [3], [4, 5, 6]]})
case("for_break", "{% for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}")
case("for_continue", "{% for i in range(6) %}{% if i is odd %}{% continue %}{% endif %}{{ i }}{% endfor %}")
case("for_break_then_else_not_run",
     "{% for i in [1, 2] %}{% break %}{% else %}else-ran{% endfor %}done")
case("for_else_break_later_iteration",
     "{% for i in [1, 2, 3] %}{{ i }}{% if i == 2 %}{% break %}{% endif %}{% else %}E{% endfor %}|"
     "{% for i in [1, 2, 3] %}{{ i }}{% if i == 1 %}{% break %}{% endif %}{% else %}E{% endfor %}")
case("for_else_continue_every_iteration",
     "{% for i in [1, 2] %}{% continue %}{% else %}E{% endfor %}|"
     "{% for i in [1, 2] %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% else %}E{% endfor %}|"
     "{% for i in [1, 2] %}{{ i }}{% if i == 2 %}{% continue %}{% endif %}{% else %}E{% endfor %}")
case("for_break_loop_last",
     "{% for x in xs %}{{ x }}{% if loop.last %}!{% endif %}{% if x == 'b' %}{% break %}{% endif %}{% endfor %}",
     {"xs": ["a", "b", "c"]})
case("for_loop_cycle_and_changed",
     "{% for i in [1, 1, 2, 2, 1] %}{{ loop.cycle('a', 'b') }}{% if loop.changed(i) %}c{% endif %}"
     "{% if loop.changed(i, 'x') %}d{% endif %}{% endfor %}")
case("for_loop_unknown_attribute", "{% for i in [1] %}[{{ loop.nope }}]{% endfor %}")
case("for_loop_unknown_method", "{% for i in [1] %}{{ loop.nope(1) }}{% endfor %}", error=True)
case("for_loop_var_does_not_leak",
     "{% set x = 'outer' %}{% for x in [1, 2] %}{{ x }}{% endfor %}{{ x }}"
     "{% for y in [1] %}{% endfor %}[{{ y }}]")
case("scope_set_in_for_does_not_leak",
     "{% set total = 0 %}{% for i in [1, 2, 3] %}{% set total = total + i %}{{ total }},{% endfor %}{{ total }}")
case("scope_set_in_if_leaks", "{% if true %}{% set y = 5 %}{% endif %}{{ y }}")
case("scope_namespace_leaks",
     "{% set ns = namespace(total=0, seen=[]) %}{% for i in [1, 2, 3] %}{% set ns.total = ns.total + i %}"
     "{% set _ = ns.seen.append(i * 10) %}{% endfor %}{{ ns.total }} {{ ns.seen }}")
case("namespace_flag_and_attr",
     "{% set ns = namespace(found=false, name=none) %}{% for m in ms %}{% if m.k == 'b' %}"
     "{% set ns.found = true %}{% set ns.name = m.v %}{% endif %}{% endfor %}{{ ns.found }}:{{ ns.name }}",
     {"ms": [{"k": "a", "v": 1}, {"k": "b", "v": "two"}]})
case("set_tuple_and_reassign", "{% set a, b = 1, 'two' %}{% set a = a + 1 %}{{ a }}{{ b }}")
case("set_block", "{% set greeting %}Hello {{ name }}!{% endset %}[{{ greeting }}] {{ greeting|length }}",
     {"name": "Ada"})
case("set_block_trim", "{% set body %}\n  {% for i in [1, 2] %}\n  - {{ i }}\n  {% endfor %}\n{% endset %}\n[{{ body }}]")
case("macro_defaults_and_keywords",
     "{% macro tag(name, value='d', sep='=') %}<{{ name }}{{ sep }}{{ value }}>{% endmacro %}"
     "{{ tag('a') }}{{ tag('b', 2) }}{{ tag('c', sep=':') }}{{ tag(value='v', name='n') }}{{ tag('e', 1.5, '-') }}")
case("macro_calls_macro",
     "{% macro inner(x) %}({{ x }}){% endmacro %}{% macro outer(xs) %}{% for x in xs %}{{ inner(x) }}{% endfor %}"
     "{% endmacro %}{{ outer([1, 'a']) }}")
case("macro_output_in_expression",
     "{% macro m(x) %}  {{ x }}-{{ x }}  {% endmacro %}{% set s = m('ab') %}[{{ s|trim|upper }}] {{ s|length }} "
     "{{ m(1) ~ '!' }} {{ 'a-a' in m('a') }}")
case("macro_reads_context_and_local_set",
     "{% macro show() %}{% set local = 'L' %}{{ who }}{{ local }}{% endmacro %}{{ show() }}[{{ local }}]",
     {"who": "ctx"})
case("macro_missing_arg_undefined", "{% macro m(a, b) %}[{{ a }}|{{ b }}|{{ b is defined }}]{% endmacro %}{{ m(1) }}")
case("macro_body_whitespace",
     "{% macro item(k, v) %}\n  {% if v %}\n{{ k }}: {{ v }}\n  {% endif %}\n{% endmacro %}\n"
     "{{ item('a', 1) }}{{ item('b', 0) }}{{ item('c', 'x') }}end")
case("macro_recursive",
     "{% macro show(v) %}{% if v is mapping %}{{ '{' }}{% for k, x in v.items() %}{{ k }}:{{ show(x) }}"
     "{% if not loop.last %},{% endif %}{% endfor %}{{ '}' }}{% elif v is string %}'{{ v }}'"
     "{% elif v is iterable %}[{% for x in v %}{{ show(x) }}{% if not loop.last %},{% endif %}{% endfor %}]"
     "{% else %}{{ v }}{% endif %}{% endmacro %}{{ show(obj) }}",
     {"obj": {"a": [1, {"b": "c"}], "d": None, "e": True}})

# ---------------------------------------------------------------- expressions
case("lit_string_escapes",
     r"""{{ 'a\nb\tc\\d\'e' }}|{{ "q\"r's" }}|{{ 'x\\ny' }}|{{ '\u00e9' }}""")
case("lit_numbers", "{{ 42 }} {{ -7 }} {{ 3.14 }} {{ 1.0 }} {{ 0.1 }} {{ 1e20 }} {{ 1e-5 }} {{ -0.0 }} "
     "{{ 1.5e3 }} {{ 0 }} {{ 2.50 }}")
case("lit_booleans_none", "{{ true }} {{ True }} {{ false }} {{ False }} [{{ none }}] [{{ None }}] "
     "{{ none is none }} {{ None is none }}")
case("lit_list_tuple_dict_print",
     "{{ [1, 'a', 2.5, none, true, [false]] }} {{ (1, 'b') }} {{ (1,) }} {{ {'a': 1, 'b': {'c': [1, 2]}} }} {{ [] }} {{ {} }}")
case("print_repr_quotes",
     "{{ l }}|{{ d }}",
     {"l": ["it's", "say \"hi\"", "both ' and \"", "nl\nx\ty", "back\\slash", "é 😀 中"],
      "d": {"k'1": "v\"1", "n": None, "f": 1.0}})
case("print_context_floats",
     "{% for f in fs %}{{ f }} {% endfor %}",
     {"fs": [1.0, 0.1, 1e20, -0.0, 1e-05, 123456789.123, 1e16, 1e15, 0.30000000000000004,
             2.5, 100.0, 1.5e-7, -3.25]})
case("print_ints", "{{ a }} {{ b }} {{ c }} {{ d }}",
     {"a": 0, "b": -17, "c": 9007199254740993, "d": -9223372036854775808})
case("print_bool_none_ctx", "{{ t }} {{ f }} [{{ n }}] {{ [n, t] }} {{ n|string }}",
     {"t": True, "f": False, "n": None})
case("print_unicode", "{{ s }}|{{ s|length }}|{{ s[0] }}|{{ s[-1] }}", {"s": "héllo wörld 😀"})
case("arith_int",
     "{{ 7 + 3 }} {{ 7 - 10 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 8 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} "
     "{{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 2 ** 0 }}")
case("arith_float_mixed",
     "{{ 1 + 1.0 }} {{ 0.1 + 0.2 }} {{ 7.5 // 2 }} {{ 7.5 % 2 }} {{ 3 * 1.5 }} {{ 2 ** 0.5 }} "
     "{{ 10 / 4 }} {{ 1.0 - 1 }} {{ 6 * 0.1 }} {{ 1 / 3 }}")
case("arith_context_vars", "{{ n + 1 }} {{ -n }} {{ -f }} {{ n * f }} {{ n // 2 }} {{ n / n }} {{ f * 2 }}",
     {"n": 5, "f": 2.5})
case("arith_precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 10 - 2 - 3 }} {{ 2 * 3 % 4 }} "
     "{{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 1 + 2 * 3 ** 2 }}")
case("arith_bool_is_int", "{{ 1 + true }} {{ true + true }} {{ false * 3 }}")
case("op_string_concat", "{{ 'ab' + 'cd' }} {{ 'ab' * 3 }} {{ [1] + [2, 3] }} {{ [0] * 3 }}")
case("op_tilde", "{{ 'x' ~ 1 ~ 2.0 ~ none ~ true ~ [1] }}|{{ 'a' ~ missing ~ 'b' }}|{{ 1 ~ 2 }}|{{ 'n=' ~ 2 * 3 }}")
case("op_compare",
     "{{ 1 == 1.0 }} {{ 1 == true }} {{ '1' == 1 }} {{ 'a' < 'b' }} {{ 2 >= 2 }} {{ 3 != 3 }} "
     "{{ [1, 2] == [1, 2] }} {{ none == none }} {{ 'abc' < 'abd' }} {{ 2 < 10 }} {{ '2' < '10' }} "
     "{{ 0 == false }} {{ 'B' < 'a' }} {{ 1.5 > 1 }} {{ {'a': 1} == {'a': 1.0} }}")
case("op_in",
     "{{ 'ell' in 'hello' }} {{ 'x' not in 'hello' }} {{ '' in 'abc' }} {{ 2 in [1, 2] }} {{ 2.0 in [1, 2] }} "
     "{{ 'k' in d }} {{ 'v' in d }} {{ 'z' not in d }} {{ [1] in [[1], 2] }}",
     {"d": {"k": "v"}})
case("op_and_or_operands",
     "{{ 0 or 'x' }}|{{ '' and 'y' }}|{{ 1 and 2 }}|{{ none or [] }}|{{ [] or 'z' }}|{{ 'a' or 'b' }}|"
     "{{ 0 and 1 }}|{{ none and 1 }}|{{ missing or 'dflt' }}|{{ false or none }}")
case("op_not", "{{ not 0 }} {{ not 'a' }} {{ not missing }} {{ not [] }} {{ not (1 and 0) }} {{ not 1 == 2 }}")
case("op_conditional", "{{ 'yes' if flag else 'no' }}|{{ 'a' if 0 else 'b' if 1 else 'c' }}|"
     "[{{ 'shown' if false }}]|[{{ 'shown' if true }}]|{{ (1 if flag else 2) + 10 }}",
     {"flag": True})
case("op_filter_binds_tighter", "{{ -1|abs }} {{ 'abc'|upper + 'd' }} {{ 1 + [1, 2]|length }} {{ -n|abs }} {{ -n|string }}",
     {"n": 3})
case("access_attr_and_subscript",
     "{{ d.a }} {{ d['b'] }} {{ d.c.d }} {{ d['c']['d'] }} {{ d.c['d'] }} {{ l[0] }} {{ l[-1] }} {{ l[1].k }} "
     "{{ s[1] }} {{ s[-2] }} {{ d.l[0] }}",
     {"d": {"a": 1, "b": "two", "c": {"d": [3]}, "l": ["first"]}, "l": [10, {"k": "v"}, 30], "s": "xyz"})
case("access_missing_is_undefined",
     "[{{ d.nope }}][{{ d['nope'] }}][{{ l[10] }}][{{ l[-10] }}][{{ d.nope is defined }}][{{ d.a is defined }}]"
     "[{{ none.x }}][{{ d.n is defined }}][{{ d.n is none }}]",
     {"d": {"a": 0, "n": None}, "l": [1]})
case("access_var_key", "{% for k in ['b', 'a'] %}{{ d[k] }}{% endfor %}{{ l[i] }}{{ l[i - 1] }}",
     {"d": {"a": 1, "b": 2}, "l": ["x", "y"], "i": 1})
case("slice_list",
     "{{ l[1:3] }} {{ l[:2] }} {{ l[3:] }} {{ l[::-1] }} {{ l[::2] }} {{ l[-2:] }} {{ l[:-1] }} {{ l[5:9] }} "
     "{{ l[1::2] }} {{ l[:] }}",
     {"l": [0, 1, 2, 3, 4]})
case("slice_string", "{{ s[1:3] }}|{{ s[:2] }}|{{ s[3:] }}|{{ s[::-1] }}|{{ s[::2] }}|{{ s[-3:] }}|{{ s[10:] }}",
     {"s": "héllo!"})

# ---------------------------------------------------------------- tests
case("test_defined_undefined",
     "{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ x is not defined }} {{ n is defined }} "
     "{{ d.k is defined }} {{ d.z is undefined }}",
     {"x": 1, "n": None, "d": {"k": 0}})
case("test_none_string_number",
     "{{ n is none }} {{ 0 is none }} {{ 'a' is string }} {{ 1 is string }} {{ 1 is number }} {{ 1.5 is number }} "
     "{{ 'a' is number }} {{ true is number }} {{ n is not none }}",
     {"n": None})
case("test_integer_float_boolean",
     "{{ 1 is integer }} {{ 1.0 is integer }} {{ 1.0 is float }} {{ 1 is float }} {{ true is integer }} "
     "{{ true is boolean }} {{ 1 is boolean }} {{ f is float }} {{ i is integer }}",
     {"f": 2.0, "i": 2})
case("test_true_false",
     "{{ true is true }} {{ 1 is true }} {{ false is false }} {{ 0 is false }} {{ none is false }} {{ t is true }}",
     {"t": True})
case("test_mapping_iterable_sequence",
     "{{ d is mapping }} {{ l is mapping }} {{ l is iterable }} {{ s is iterable }} {{ 1 is iterable }} "
     "{{ n is iterable }} {{ l is sequence }} {{ s is sequence }} {{ d is sequence }} {{ d is iterable }} "
     "{{ 1 is sequence }}",
     {"d": {"a": 1}, "l": [1], "s": "str", "n": None})
case("test_odd_even_divisibleby",
     "{% for i in [-3, 0, 1, 2, 9, 12] %}{{ i }}:{{ i is odd }}/{{ i is even }}/{{ i is divisibleby(3) }} {% endfor %}")
case("test_eq_equalto",
     "{{ 1 is eq 1 }} {{ 'a' is equalto 'b' }} {{ x is eq('v') }} {{ 1 is equalto(1.0) }} {{ x is not eq 'v' }}",
     {"x": "v"})

# ---------------------------------------------------------------- filters
case("tojson_nested_unicode",
     "{{ obj|tojson }}",
     {"obj": {"name": "café", "list": [1, 2.5, True, None, False], "nested": {"k": "v \"q\" 'a'\n"},
              "emoji": "😀", "cjk": "中文", "empty": {}, "el": []}})
case("tojson_compact_separators", "{{ obj|tojson(separators=(',', ':')) }}",
     {"obj": {"a": [1, {"b": None}], "c": "x y"}})
case("tojson_floats", "{{ fs|tojson }}",
     {"fs": [1.0, 0.1, 1e20, -0.0, 1e-05, 3, 1.5e300, 0.30000000000000004, 100.0, -2.5, 1e16, 1e15]})
case("tojson_big_ints", "{{ ns|tojson }}",
     {"ns": [9007199254740993, 9223372036854775807, -9223372036854775808, 0, -1]})
case("tojson_int_beyond_int64", "{{ n|tojson }} {{ n }}", {"n": 12345678901234567890})
case("tojson_string_escapes", "{{ s|tojson }}",
     {"s": "quote\" back\\ slash/ nl\n cr\r tab\t bs\b ff\f nul\x00 soh\x01 us\x1f del\x7f ls\u2028 é 😀 <tag>&"})
case("tojson_scalars", "{{ 'a\"b'|tojson }} {{ 1|tojson }} {{ 1.0|tojson }} {{ true|tojson }} {{ none|tojson }} "
     "{{ (1, 'x')|tojson }} {{ {'k': [1, 2]}|tojson }} {{ ''|tojson }}")
case("tojson_indent", "{{ obj|tojson(indent=2) }}",
     {"obj": {"a": [1, 2], "b": {"c": None}, "e": [], "f": {}}})
case("tojson_sort_keys", "{{ obj|tojson(sort_keys=true) }}", {"obj": {"b": 1, "a": {"d": 2, "c": 3}}})
case("filter_string", "{{ 1.0|string }} {{ [1, 'a']|string }} {{ none|string }} {{ true|string }} "
     "{{ (1|string) ~ 'x' }} {{ {'a': none}|string }} {{ 3|string|length }}")
case("filter_length_count",
     "{{ 'héllo'|length }} {{ [1, 2, 3]|length }} {{ {'a': 1, 'b': 2}|length }} {{ ''|length }} {{ missing|length }} "
     "{{ [1, 2]|count }} {{ 'abc'|count }}")
case("filter_default",
     "{{ missing|default('d') }}|{{ n|default('d') }}|{{ ''|default('d') }}|{{ ''|default('d', true) }}|"
     "{{ n|d('d', true) }}|{{ 0|default('d', true) }}|{{ false|default('d') }}|{{ missing|d }}|{{ x|default('d') }}|"
     "{{ []|default('empty', true) }}|{{ d.nope|default(1) }}",
     {"n": None, "x": "set", "d": {}})
case("filter_trim", "[{{ '  a b \\n\\t '|trim }}][{{ 'xxaxx'|trim('x') }}][{{ s|trim }}]", {"s": "\n  hi  \n"})
case("filter_case",
     "{{ 'Hello World'|upper }} {{ 'Hello World'|lower }} {{ 'hELLO wORLD'|capitalize }} {{ 'hello wORLD'|title }} "
     "{{ \"they're here-now\"|title }} {{ 'éa'|upper }}")
case("filter_first_last",
     "{{ [1, 2, 3]|first }} {{ [1, 2, 3]|last }} {{ 'abc'|first }} {{ 'abc'|last }} [{{ []|first }}] "
     "{{ l|last }}",
     {"l": [{"a": 1}, {"b": 2}]})
case("filter_join", "{{ ['a', 'b', 'c']|join }}|{{ ['a', 'b']|join(', ') }}|{{ [1, none, 2.0, true]|join('-') }}|"
     "{{ 'abc'|join('.') }}|{{ []|join(',') }}")
case("filter_list", "{{ 'abc'|list }} {{ d|list }} {{ (1, 2)|list }} {{ range(3)|list }}", {"d": {"x": 1, "y": 2}})
case("filter_reverse", "{{ 'abc'|reverse }} {{ [1, 2, 3]|reverse|list }} {% for x in [1, 2]|reverse %}{{ x }}{% endfor %}")
case("filter_replace", "{{ 'a-b-c'|replace('-', '+') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ 'abc'|replace('', '.') }} "
     "{{ 'x\ny'|replace('\n', '\\\\n') }}")
case("filter_int_float",
     "{{ '42'|int }} {{ ' 42 '|int }} {{ '3.7'|int }} {{ -3.7|int }} {{ 'x'|int }} {{ '1e3'|int }} {{ '0x1A'|int }} "
     "{{ ''|int }} {{ none|int }} {{ true|int }} {{ '12'|int + 1 }} "
     "{{ '1.5'|float }} {{ 2|float }} {{ 'x'|float }} {{ '1e3'|float }} {{ ' 2 '|float }}")
case("filter_abs_round",
     "{{ -3|abs }} {{ -2.5|abs }} {{ 3|abs }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.4|round }} {{ 5|round }} "
     "{{ 3.14159|round(2) }} {{ 2.675|round(2) }} {{ -1.5|round }} {{ 1234.5|round(-2) }} {{ 2.7|round(0, 'floor') }} "
     "{{ 2.1|round(method='ceil') }} {{ f|round(1) }}",
     {"f": 0.05})
case("filter_items", "{% for k, v in d|items %}{{ k }}={{ v }};{% endfor %}", {"d": {"b": 1, "a": [2]}})
case("filter_map",
     "{{ users|map(attribute='name')|join(',') }} {{ ['a', 'B']|map('upper')|list }} {{ [1, 2]|map('string')|join }} "
     "{{ users|map(attribute='name')|map('length')|list }}",
     {"users": [{"name": "ann"}, {"name": "bo"}]})
case("filter_select_reject",
     "{{ vals|select('string')|list }} {{ vals|reject('string')|list }} {{ vals|select|list }} "
     "{{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3]|reject('equalto', 2)|list }} {{ vals|reject('none')|list }} "
     "{{ [1, 2, 3]|select('divisibleby', 3)|list }} {{ vals|select('defined')|list|length }}",
     {"vals": ["a", 1, None, "", 0, "b", 2.5]})
case("filter_selectattr_rejectattr",
     "{{ ms|selectattr('role', 'equalto', 'user')|map(attribute='c')|join(',') }}|"
     "{{ ms|rejectattr('role', 'equalto', 'user')|map(attribute='c')|join(',') }}|"
     "{{ ms|selectattr('tool')|map(attribute='c')|list }}|{{ ms|rejectattr('tool')|list|length }}|"
     "{{ ms|selectattr('tool', 'defined')|list|length }}",
     {"ms": [{"role": "user", "c": "u1"}, {"role": "assistant", "c": "a1", "tool": "t"},
             {"role": "user", "c": "u2", "tool": ""}]})
case("filter_unique", "{{ [3, 1, 3, 2, 1]|unique|list }} {{ ['a', 'A', 'b', 'a']|unique|list }}")
case("filter_sort",
     "{{ [3, 1, 2]|sort }} {{ [3, 1, 2]|sort(reverse=true) }} {{ ['b', 'A', 'a', 'B', 'c']|sort }} "
     "{{ people|sort(attribute='age')|map(attribute='n')|join }} {{ people|sort(attribute='n', reverse=true)|map(attribute='n')|join }} "
     "{{ [2.5, 1, 2]|sort }}",
     {"people": [{"n": "c", "age": 30}, {"n": "a", "age": 25}, {"n": "b", "age": 30}]})
case("filter_dictsort", "{{ d|dictsort }} {% for k, v in d|dictsort %}{{ k }}{{ v }}{% endfor %}",
     {"d": {"b": 2, "C": 3, "a": 1}})
case("filter_indent",
     "[{{ 'a\nb\n\nc'|indent }}][{{ 'a\nb'|indent(2) }}][{{ 'a\nb'|indent(2, true) }}][{{ 'a\nb\n'|indent(3) }}]"
     "[{{ 'x'|indent }}][{{ text|indent(first=true) }}]",
     {"text": "l1\n  l2"})
case("filter_safe", "{{ '<b>&</b>'|safe }} {{ ('a' ~ '<'|safe)|length }} {{ '<i>' }}")
case("filter_sum_min_max",
     "{{ [1, 2, 3]|sum }} {{ [1, 2.5]|sum }} {{ []|sum }} {{ [3, 1, 2]|min }} {{ [3, 1, 2]|max }} "
     "{{ ['b', 'A', 'c']|min }} {{ ['a', 'B']|max }} {{ [1.5, 2]|max }} {{ []|max }}|")
case("filter_chain", "{{ '  Mixed Case  '|trim|lower|replace(' ', '_') }} {{ xs|map('trim')|select|join('|') }}",
     {"xs": [" a ", "  ", "b"]})

# ---------------------------------------------------------------- methods
case("method_strip",
     "[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ 'xxhixx'.strip('x') }}][{{ 'abcba'.lstrip('ab') }}]"
     "[{{ t.rstrip('\n') }}]",
     {"s": " \t hi there \n", "t": "line\n\n"})
case("method_split",
     "{{ 'a b  c '.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ ''.split(',') }} "
     "{{ ''.split() }} {{ s.split('</think>')[-1] }} {{ 'a::b'.split('::')|length }}",
     {"s": "<think>r</think>answer"})
case("method_startswith_endswith",
     "{{ s.startswith('<|') }} {{ s.endswith('|>') }} {{ s.startswith('x') }} {{ ''.startswith('') }} {{ s.endswith('') }}",
     {"s": "<|im_end|>"})
case("method_case",
     "{{ s.lower() }} {{ s.upper() }} {{ s.title() }} {{ s.capitalize() }} {{ \"they're\".title() }}",
     {"s": "hELLO wOrld"})
case("method_replace_find_count",
     "{{ 'a-b-c'.replace('-', '') }} {{ 'aaa'.replace('a', 'bb', 1) }} {{ 'hello'.find('l') }} {{ 'hello'.find('z') }} "
     "{{ 'hello'.count('l') }} {{ 'aaaa'.count('aa') }}")
case("method_join", "{{ ', '.join(['a', 'b']) }}|{{ ''.join(l) }}|{{ '-'.join('abc') }}|{{ ', '.join([]) }}",
     {"l": ["x", "y", "z"]})
case("method_dict",
     "{{ d.get('a') }} [{{ d.get('z') }}] {{ d.get('z', 'dflt') }} {{ d.get('n', 'dflt') }} {{ d.keys()|list }} "
     "{{ d.values()|list }} {{ d.items()|list }} {% for k, v in d.items() %}{{ k }}{% endfor %} {{ d.get('a') is none }}",
     {"d": {"a": 1, "n": None, "b": [2]}})
case("method_list_append_pop",
     "{% set l = [1, 2, 3] %}{{ l.append(4) }}{{ l }} {{ l.pop() }} {{ l.pop(0) }} {{ l }} "
     "{% set _ = ctx.append('x') %}{{ ctx }} {{ ctx.pop() }}{{ ctx|length }}",
     {"ctx": ["c"]})

# ---------------------------------------------------------------- globals
case("range_forms",
     "{{ range(4)|list }} {{ range(2, 5)|list }} {{ range(0, 10, 3)|list }} {{ range(5, 0, -2)|list }} "
     "{{ range(3, -1, -1)|list }} {{ range(0)|list }} {{ range(3, 1)|list }} {{ range(n)|length }} {{ range(1, n + 1)|sum }}",
     {"n": 4})
case("range_for_reverse", "{% for i in range(xs|length - 1, -1, -1) %}{{ xs[i] }}{% endfor %}", {"xs": ["a", "b", "c"]})
case("namespace_print_attrs", "{% set ns = namespace(a=1, b=[], c='s') %}{{ ns.a }} {{ ns.b }} {{ ns.c }} "
     "[{{ ns.missing }}] {{ ns.missing is defined }}")

# ---------------------------------------------------------------- chat-shaped
CHATML = (
    "{% if messages[0]['role'] != 'system' %}\n"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}\n"
    "{% for message in messages %}\n"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}\n"
    "{% if add_generation_prompt %}\n"
    "<|im_start|>assistant\n"
    "{% endif %}\n"
)
case("chat_chatml_default_system_gen_prompt", CHATML,
     {"messages": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."},
                   {"role": "user", "content": "Tell me a joke."}],
      "add_generation_prompt": True})
case("chat_chatml_system_given_no_prompt", CHATML,
     {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}],
      "add_generation_prompt": False})

KIMI_LIKE = (
    "{%- macro render_content(msg) -%}\n"
    "  {%- set c = msg['content'] -%}\n"
    "  {%- if c is string -%}\n"
    "    {{- c -}}\n"
    "  {%- elif c is not none -%}\n"
    "    {%- for part in c -%}\n"
    "      {%- if part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- elif 'image' in part or part['type'] == 'image_url' -%}<|media_start|>image<|media_end|>"
    "{%- endif -%}\n"
    "    {%- endfor -%}\n"
    "  {%- endif -%}\n"
    "{%- endmacro -%}\n"
    "{%- if messages|length == 0 or messages[0]['role'] != 'system' -%}\n"
    "<|im_system|>system<|im_middle|>You are a helpful assistant<|im_end|>\n"
    "{%- endif -%}\n"
    "{%- for message in messages -%}\n"
    "  {%- set role_name = message.get('name') or message['role'] -%}\n"
    "  {%- if message['role'] == 'user' -%}\n"
    "<|im_user|>{{ role_name }}<|im_middle|>\n"
    "  {%- elif message['role'] == 'assistant' -%}\n"
    "<|im_assistant|>{{ role_name }}<|im_middle|>\n"
    "  {%- else -%}\n"
    "<|im_system|>{{ role_name }}<|im_middle|>\n"
    "  {%- endif -%}\n"
    "  {{- render_content(message) -}}\n"
    "  {%- if message.get('tool_calls') -%}\n"
    "<|tool_calls_section_begin|>\n"
    "    {%- for tc in message['tool_calls'] -%}\n"
    "<|tool_call_begin|>{{ tc['id'] }}<|tool_call_argument_begin|>"
    "{% if tc['function']['arguments'] is string %}{{ tc['function']['arguments'] }}"
    "{% else %}{{ tc['function']['arguments']|tojson }}{% endif %}<|tool_call_end|>\n"
    "    {%- endfor -%}\n"
    "<|tool_calls_section_end|>\n"
    "  {%- endif -%}\n"
    "<|im_end|>\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "<|im_assistant|>assistant<|im_middle|>\n"
    "{%- endif -%}\n"
)
case("chat_markers_parts_and_names", KIMI_LIKE,
     {"messages": [
         {"role": "user", "name": "alice", "content": [
             {"type": "text", "text": "What is in "}, {"type": "image", "image": "img://1"},
             {"type": "text", "text": " this picture?"}]},
         {"role": "assistant", "content": "A cat."},
         {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}},
                                      {"type": "text", "text": "And this?"}]}],
      "add_generation_prompt": True})
case("chat_markers_tool_calls", KIMI_LIKE,
     {"messages": [
         {"role": "system", "content": "sys"},
         {"role": "user", "content": "Weather in Paris and Oslo?"},
         {"role": "assistant", "content": None, "tool_calls": [
             {"id": "functions.get_weather:0", "type": "function",
              "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "°C", "days": 2}}},
             {"id": "functions.get_weather:1", "type": "function",
              "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
         {"role": "tool", "name": "get_weather", "content": "{\"temp\": 21.5}"},
         {"role": "assistant", "content": ""}],
      "add_generation_prompt": False})

TOOLS_TMPL = (
    "{% if tools %}\n"
    "# Tools\n"
    "{% for tool in tools %}\n"
    "{% set fn = tool.function if tool.function is defined else tool %}\n"
    "## {{ fn.name }}\n"
    "{{ fn.description|default('No description.')|trim }}\n"
    "{% for pname, p in fn.parameters.properties.items() %}\n"
    "- {{ pname }}{% if pname in fn.parameters.get('required', []) %} (required){% endif %}: {{ p.type }}"
    "{% if p.enum is defined %} one of {{ p.enum|join(', ') }}{% endif %}\n"
    "{% endfor %}\n"
    "schema: {{ fn.parameters|tojson }}\n"
    "{% endfor %}\n"
    "{% endif %}\n"
    "{{ messages[-1].content }}"
)
case("chat_tools_schemas", TOOLS_TMPL,
     {"tools": [
         {"type": "function", "function": {
             "name": "search", "description": "  Search the web.\n",
             "parameters": {"type": "object", "properties": {
                 "query": {"type": "string", "description": "Query text"},
                 "top_k": {"type": "integer", "minimum": 1, "default": 5},
                 "filters": {"type": "object", "properties": {"lang": {"type": "string", "enum": ["en", "fr"]}}}},
                 "required": ["query"]}}},
         {"name": "calc", "parameters": {"type": "object", "properties": {
             "op": {"type": "string", "enum": ["add", "mul"]}, "x": {"type": "number"}, "y": {"type": "number"}},
             "required": ["op", "x", "y"], "additionalProperties": False}}],
      "messages": [{"role": "user", "content": "find cats"}]})
case("chat_tools_absent", TOOLS_TMPL, {"messages": [{"role": "user", "content": "hi"}]})

LAST_ASSISTANT = (
    "{% set ns = namespace(last=-1) %}\n"
    "{% for i in range(messages|length - 1, -1, -1) %}\n"
    "  {% if messages[i].role == 'user' %}\n"
    "    {% set ns.last = i %}\n"
    "    {% break %}\n"
    "  {% endif %}\n"
    "{% endfor %}\n"
    "{% set history = messages[:ns.last] %}\n"
    "{% set current = messages[ns.last:] %}\n"
    "{% for m in history %}\n"
    "[{{ m.role }}] {% if m.role == 'assistant' and '</think>' in m.content %}"
    "{{ m.content.split('</think>')[-1].strip() }}{% else %}{{ m.content }}{% endif %}\n"
    "{% endfor %}\n"
    "---{{ ns.last }}/{{ history|length }}/{{ current|length }}\n"
    "{% for m in current %}\n"
    "[{{ m.role }}] {{ m.content }}\n"
    "{% endfor %}\n"
    "{% if add_generation_prompt %}[assistant] <think>\n{% endif %}"
)
case("chat_last_user_split", LAST_ASSISTANT,
     {"messages": [
         {"role": "user", "content": "q1"},
         {"role": "assistant", "content": "<think>hmm</think>\n\n a1"},
         {"role": "user", "content": "q2"},
         {"role": "assistant", "content": "<think>more</think>a2"},
         {"role": "tool", "content": "result"}],
      "add_generation_prompt": True})

LLAMA_LIKE = (
    "{{- bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = '' %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "{%- if system_message %}\n"
    "    {{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + system_message + '<|eot_id|>' }}\n"
    "{%- endif %}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content']|trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)
case("chat_headers_alternating", LLAMA_LIKE,
     {"bos_token": "<|begin_of_text|>",
      "messages": [{"role": "system", "content": "  Sys prompt.  "}, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": " Hey \n"}, {"role": "user", "content": "Bye"}],
      "add_generation_prompt": True})
case("chat_headers_no_system", LLAMA_LIKE,
     {"bos_token": "<s>", "messages": [{"role": "user", "content": "only"}], "add_generation_prompt": False})
case("err_chat_roles_not_alternating", LLAMA_LIKE,
     {"bos_token": "<s>", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
      "add_generation_prompt": False}, error=True)

case("chat_generation_prompt_loop_last",
     "{% for m in messages %}<{{ m.role }}>{{ m.content if m.content is not none else '' }}"
     "{% if loop.last and add_generation_prompt and m.role != 'assistant' %}<assistant>{% endif %}{% endfor %}",
     {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None}, {"role": "user", "content": "y"}],
      "add_generation_prompt": True})
case("chat_reasoning_content_or_split",
     "{% for m in messages %}\n"
     "{% if m.role == 'assistant' %}\n"
     "{% set reasoning = m.reasoning_content if m.reasoning_content is defined else '' %}\n"
     "{% set content = m.content or '' %}\n"
     "{% if not reasoning and '</think>' in content %}\n"
     "{% set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') %}\n"
     "{% set content = content.split('</think>')[-1].lstrip('\\n') %}\n"
     "{% endif %}\n"
     "A[{{ reasoning }}|{{ content }}]\n"
     "{% else %}\n"
     "{{ m.role[0]|upper }}[{{ m.content }}]\n"
     "{% endif %}\n"
     "{% endfor %}\n",
     {"messages": [{"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "<think>\nplan\n</think>\n\nreply"},
                   {"role": "assistant", "content": "ok", "reasoning_content": "given"},
                   {"role": "assistant", "content": None}]})

# ---------------------------------------------------------------- errors
case("err_unknown_filter", "{{ 1|frobnicate }}", error=True)
case("err_unknown_test", "{{ 1 is frobnicated }}", error=True)
case("err_unclosed_block", "{% if true %}x", error=True)
case("err_unclosed_for", "{% for x in [1] %}{{ x }}", error=True)
case("err_unclosed_expr", "a {{ x ", {"x": 1}, error=True)
case("err_endfor_without_for", "x{% endfor %}", error=True)
case("err_unknown_statement", "{% frobnicate %}", error=True)
case("err_break_outside_loop", "{% break %}", error=True)
case("err_call_undefined_function", "{{ frob(1) }}", error=True)
case("err_raise_exception", "{% if true %}{{ raise_exception('Bad role: ' ~ r) }}{% endif %}", {"r": "x"}, error=True)
case("err_attr_of_undefined", "{{ x.y }}", error=True)
case("err_attr_of_missing_key", "{{ d.a.b }}", {"d": {}}, error=True)
case("err_method_on_none_content", "{{ m.content.strip() }}", {"m": {"content": None}}, error=True)
case("err_division_by_zero", "{{ n / 0 }}", {"n": 1}, error=True)
case("err_floordiv_mod_by_zero", "{{ n % 0 }}", {"n": 1}, error=True)
case("err_int_plus_str", "{{ 1 + 'a' }}", error=True)
case("err_tilde_precedence_str_plus_int", "{{ 'n=' ~ 1 + 1 }}", error=True)
case("err_undefined_arithmetic", "{{ missing + 1 }}", error=True)
case("err_undefined_compare", "{% if missing > 0 %}x{% endif %}", error=True)
case("err_tojson_undefined", "{{ missing|tojson }}", error=True)
case("err_str_join_non_str", "{{ ', '.join([1, 2]) }}", error=True)
case("err_macro_too_many_args", "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}", error=True)
case("err_iterate_int", "{% for i in 5 %}{{ i }}{% endfor %}", error=True)
case("err_empty_expression", "{{ }}", error=True)


# ---------------------------------------------------------------- % formatting
case("pct_basic", "{{ '%s-%d' % ('a', 3) }}|{{ '%s' % 'one' }}|{{ '%s' % [1, 'b'] }}|{{ '100%%' % () }}")
case("pct_repr_and_none", "{{ '%r %s %r' % ('q', none, none) }}|{{ '%r' % \"it's\" }}")
case("pct_widths", "[{{ '%5s' % 'ab' }}][{{ '%-5s|' % 'ab' }}][{{ '%.2s' % 'abcd' }}][{{ '%6.3s' % 'héllo' }}]")
case("pct_ints", "{{ '%d %i %5d %-5d| %05d %+d % d %.3d' % (42, -7, 3, 3, -42, 5, 5, 7) }}")
case("pct_int_of_float_and_bool", "{{ '%d %d %d' % (3.9, -3.9, true) }}")
case("pct_hex_oct", "{{ '%x %X %o %#x %#X %#o %x %08x %#08x' % (255, 255, 8, 255, 255, 8, -255, 255, 255) }}")
case("pct_floats", "{{ '%f %.2f %8.3f %-8.1f| %+.1f %e %.3E %g %G %g %g' % (1.5, 3.14159, 2.5, 2.5, 1.0, 12345.678, 0.00012, 0.0001, 1e20, 100000, 1e-5) }}",)
case("pct_float_of_int", "{{ '%.2f %f' % (3, x) }}", {"x": 2})
case("pct_char", "{{ '%c%c%c' % (72, 'i', 233) }}")
case("pct_values_from_context", "{% for m in messages %}{{ '[%s] %s (%d chars)' % (m.role, m.content, m.content|length) }}\n{% endfor %}",
     {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]})
case("pct_dict_as_one_argument", "{{ '%s' % d }}", {"d": {"a": 1}})
case("err_pct_too_few", "{{ '%s %s' % ('a',) }}", error=True)
case("err_pct_too_many", "{{ '%s' % ('a', 'b') }}", error=True)
case("err_pct_not_all_converted", "{{ 'abc' % 5 }}", error=True)
case("err_pct_d_of_string", "{{ '%d' % 'x' }}", error=True)
case("err_pct_x_of_float", "{{ '%x' % 1.5 }}", error=True)
case("err_pct_bad_conversion", "{{ '%y' % 1 }}", error=True)
case("err_pct_incomplete", "{{ 'abc%' % () }}", error=True)

# ---------------------------------------------------------------- filter blocks
case("filter_block_upper", "{% filter upper %}Hello {{ name }}!{% endfilter %}", {"name": "bob"})
case("filter_block_args_and_chain", "{% filter replace('a', 'o') | trim | title %}  banana {{ x }}  {% endfilter %}|", {"x": "cake"})
case("filter_block_in_loop", "{% for m in ['a', 'b'] %}{% filter upper %}{{ m }}-{{ loop.index }}{% endfilter %},{% endfor %}")
case("filter_block_whitespace", "x\n  {% filter trim %}\n   padded   \n  {% endfilter %}\ny")
case("err_filter_block_unclosed", "{% filter upper %}abc", error=True)

# ---------------------------------------------------------------- Unicode text in string methods
case("unicode_trim_and_strip_spaces", "[{{ s|trim }}][{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}]",
     {"s": "\u00a0\u3000 x y\u2003\u2028\u0085\u001f"})
case("unicode_strip_chars_are_characters", "[{{ a.strip('\u3002') }}][{{ b.strip('\u00e9') }}][{{ c.rstrip('\u00e9!') }}][{{ c|trim('!\u00e9') }}]",
     {"a": "\u300c\u3053\u3093\u300d", "b": "\u00e8a", "c": "\u00e9\u00e8\u00e9!\u00e9"})
case("unicode_split_whitespace", "{{ s.split()|join('|') }}/{{ s.split(none, 1)|join('|') }}/{{ t.split(none, 1)|join('|') }}",
     {"s": "\u3000a\u00a0b c\u2003", "t": " a b  "})
case("startswith_start_end", "{{ [s.startswith('b', 1), s.startswith('a', 0, 0), s.startswith('', 3), s.startswith('', 4), "
     "s.endswith('b', 0, 2), s.endswith('c', -1), s.startswith('\u00e9', 1), s.startswith(('x', 'c'), -1), "
     "s.startswith('', 2, 1), s.endswith('ab', none, -2), s.startswith('a', none, none)] }}", {"s": "ab\u00e9c"})
case("replace_empty_between_characters", "{{ s|replace('', '|') }} {{ s.replace('', '-', 2) }} {{ ''|replace('', '+') }}",
     {"s": "\u00e9\u00e9a"})
case("range_large_steps", "{{ range(0, 4611686018427387905, 2305843009213693952)|list }} "
     "{{ range(-9223372036854775807 - 1, 9223372036854775807, 4611686018427387904)|list }} "
     "{{ range(9223372036854775807, -9223372036854775807 - 1, -6917529027641081856)|list }} {{ range(5, 5)|list }}")
case("unique_and_map_attributes", "{{ d|unique(attribute='k')|map(attribute='k')|list }} {{ d|unique(attribute='k', case_sensitive=true)|list|length }} "
     "{{ l|map(attribute='0')|list }} {{ l|map(attribute='1.0')|list }}",
     {"d": [{"k": "A"}, {"k": "a"}, {"k": "b"}], "l": [[1, [5]], [3, [6]]]})
case("err_float_power_overflows", "{{ 10.0 ** 1000 }}", error=True)
case("err_zero_to_a_negative_power", "{{ 0 ** -1 }}", error=True)
case("err_zero_float_to_a_negative_power", "{{ 0.0 ** -2.5 }}", error=True)
case("powers_in_range", "{{ 2 ** -1 }} {{ 2.0 ** 0.5 }} {{ (-8) ** 2 }} {{ 10.0 ** 300 }} {{ 0 ** 0 }}")
case("long_operator_chains", "{{ x" + " ~ x" * 150 + " }}|{{ 1" + " + 1" * 150 + " }}|{{ s" + "|trim" * 100 + " }}",
     {"x": "a", "s": " b "})


def main(argv):
    env = make_env()
    ids = set()
    lines = []
    nerr = 0
    for cid, template, context, want_error in CASES:
        assert cid not in ids, "duplicate id " + cid
        ids.add(cid)
        ctx_text = json.dumps(context, ensure_ascii=False, allow_nan=False)
        ctx = json.loads(ctx_text)  # render exactly what the test side will parse
        try:
            rendered = env.from_string(template).render(**ctx)
            err = None
        except Exception as e:  # noqa: BLE001 - any jinja2/Python error is an error case
            rendered = None
            err = e
        if want_error != (err is not None):
            raise SystemExit("case %s: expected %s, jinja2 gave %s" % (
                cid, "an error" if want_error else "a rendering",
                "%s: %s" % (type(err).__name__, err) if err else repr(rendered)))
        obj = {"id": cid, "template": template, "context": json.loads(ctx_text)}
        if err is None:
            assert isinstance(rendered, str)
            obj["rendered"] = rendered
        else:
            obj["error"] = True
            nerr += 1
        line = json.dumps(obj, ensure_ascii=False, allow_nan=False)
        assert json.loads(line) == obj
        lines.append(line + "\n")
    data = "".join(lines).encode("utf-8")
    if len(argv) > 1:
        with open(argv[1], "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
    print("%d cases: %d render, %d error" % (len(CASES), len(CASES) - nerr, nerr), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
