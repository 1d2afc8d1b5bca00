// What the Jinja interpreter's expressions call: operators with Python's semantics, attribute and
// item lookup as jinja2's sandbox does it, Python's str / dict methods, Jinja's filters and tests,
// and the globals transformers gives a chat template (range, namespace, strftime_now).
#pragma once

#include <string>

#include "tokenizer/jinja_value.h"

namespace attn::jinja {

// The items a for loop visits: a list's elements, a dict's keys, a string's characters, nothing for
// an undefined value; an error for anything else.
Array Iterate(const Value& v, int line);

// obj.name: a dict's item (its methods items / keys / values / get first, as in Python), a
// namespace's attribute, a str's method; undefined where there is none. An error on undefined.
Value GetAttr(const Value& obj, const std::string& name, int line);
// obj[key]: list / str by index (negative from the end), dict by key; undefined where there is none.
Value GetItem(const Value& obj, const Value& key, int line);
// obj[start:stop:step] on a list or str (absent parts undefined).
Value Slice(const Value& obj, const Value& start, const Value& stop, const Value& step, int line);

// a op b for + - * / // % ** ~ == != < <= > >= in "not in".
Value BinaryOp(const std::string& op, const Value& a, const Value& b, int line);

Value ApplyFilter(const std::string& name, const Value& v, Args& args, int line);
bool ApplyTest(const std::string& name, const Value& v, Args& args, int line);

// Globals.
Value Range(Args& args);
Value MakeNamespace(Args& args);
// strftime(format) of `now` ("YYYY-MM-DD HH:MM:SS"), or of the current local time when empty.
std::string StrftimeNow(const std::string& format, const std::string& now);

}  // namespace attn::jinja
