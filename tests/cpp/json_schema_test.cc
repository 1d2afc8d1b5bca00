// JSON Schema -> GBNF (src/model/json_schema.h): the grammars, read by Grammar::Parse, accept the
// schemas' instances (compact, spaced and pretty-printed) and refuse the others; unsupported
// schemas raise attn::Error naming what is unsupported; and llama.cpp's grammars for the same
// schemas (tests/fixtures/json_schema_llamacpp.json) agree with attn's on the same instances.
#include "model/json_schema.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "attn/error.h"
#include "model/grammar.h"

namespace attn {
namespace {

// '"' + s + '"' (built by appends: GCC 12 at -O3 mistakes the concatenation for an overlapping copy).
std::string Quoted(const std::string& s) {
  std::string out = "\"";
  out += s;
  out += '"';
  return out;
}

using Json = nlohmann::ordered_json;

std::shared_ptr<Grammar> Compile(const std::string& schema) {
  return Grammar::Parse(JsonSchemaToGbnf(schema));
}

// Whether the grammar accepts every byte of `text` and is complete after the last.
bool Accepts(const std::shared_ptr<Grammar>& grammar, std::string_view text) {
  GrammarMatcher matcher(grammar);
  for (char c : text) {
    if (!matcher.Feed(static_cast<uint8_t>(c))) return false;
  }
  return matcher.complete();
}

// dump(2) with every line end and indentation made one space: {"a": [1, 2]} -> { "a": [ 1, 2 ] }.
std::string Spaced(const Json& value) {
  const std::string pretty = value.dump(2);
  std::string out;
  for (size_t i = 0; i < pretty.size(); ++i) {
    if (pretty[i] != '\n') {
      out += pretty[i];
      continue;
    }
    out += ' ';
    while (i + 1 < pretty.size() && pretty[i + 1] == ' ') ++i;
  }
  return out;
}

// `text` as written and the same value compact, spaced, pretty-printed, and with non-ASCII escaped.
void ExpectValid(const std::shared_ptr<Grammar>& grammar, const std::string& text) {
  const Json value = Json::parse(text);
  for (const std::string& form :
       {text, value.dump(), Spaced(value), value.dump(2), value.dump(-1, ' ', /*ensure_ascii=*/true)}) {
    EXPECT_TRUE(Accepts(grammar, form)) << "refused: " << form;
  }
}

void ExpectInvalid(const std::shared_ptr<Grammar>& grammar, const std::string& text) {
  EXPECT_FALSE(Accepts(grammar, text)) << "accepted: " << text;
}

// The message of the attn::Error that converting `schema` throws ("" if none).
std::string ErrorOf(const std::string& schema) {
  try {
    JsonSchemaToGbnf(schema);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(JsonSchema, Primitives) {
  const auto string = Compile(R"({"type": "string"})");
  for (const char* ok : {R"("")", R"("hello")", R"("a\"b\\c\/d\b\f\n\r\t")", R"("\u00e9\uD83D\uDE00")",
                         "\"\xC3\xA9t\xC3\xA9 \xF0\x9F\x98\x80\""}) {
    ExpectValid(string, ok);
  }
  for (const char* bad : {R"(hello)", R"("hello)", R"("a\x")", R"("\u12G4")", "\"a\nb\"", "\"a\tb\"",
                          R"("a" )", R"( "a")", R"("a""b")"}) {
    ExpectInvalid(string, bad);
  }

  const auto integer = Compile(R"({"type": "integer"})");
  for (const char* ok : {"0", "-0", "7", "-42", "1234567890123456"}) ExpectValid(integer, ok);
  for (const char* bad : {"01", "+1", "1.0", "1e3", "-", "", "12345678901234567", "\"1\""}) {
    ExpectInvalid(integer, bad);
  }

  const auto number = Compile(R"({"type": "number"})");
  for (const char* ok : {"0", "-1", "3.25", "-0.5e-3", "1E+10", "2e7", "0.0000000000000001"}) {
    EXPECT_TRUE(Accepts(number, ok)) << ok;
  }
  for (const char* bad : {".5", "1.", "01.5", "1e", "1e+", "+1", "NaN", "Infinity", "1.2.3"}) {
    ExpectInvalid(number, bad);
  }

  const auto boolean = Compile(R"({"type": "boolean"})");
  ExpectValid(boolean, "true");
  ExpectValid(boolean, "false");
  for (const char* bad : {"True", "1", "null", "\"true\"", "tru"}) ExpectInvalid(boolean, bad);

  const auto null = Compile(R"({"type": "null"})");
  ExpectValid(null, "null");
  for (const char* bad : {"Null", "0", "{}", "nul"}) ExpectInvalid(null, bad);
}

TEST(JsonSchema, StringLengthsCountCharactersAndFormats) {
  const auto g = Compile(R"({"type": "string", "minLength": 2, "maxLength": 4})");
  for (const char* ok : {R"("ab")", R"("abcd")", R"("\n\t")", R"("\u00e9\u00e9\u00e9\u00e9")",
                         "\"\xC3\xA9\xC3\xA9\"", "\"\xF0\x9F\x98\x80\xF0\x9F\x98\x80\""}) {
    ExpectValid(g, ok);
  }
  for (const char* bad : {R"("")", R"("a")", R"("abcde")", R"("\n\n\n\n\n")", R"(12)"}) ExpectInvalid(g, bad);
  // A character past U+FFFF escaped is a surrogate pair: one character; lone surrogates are none.
  ExpectValid(g, R"("\ud83d\ude00\uD83D\uDE00")");
  for (const char* bad : {R"("\ud83d\ude00\ud83d\ude00\ud83d\ude00\ud83d\ude00\ud83d\ude00")",
                          R"("\ud83dab")", R"("ab\ude00")", R"("\ude00\ud83d")"}) {
    ExpectInvalid(g, bad);
  }

  // Counts past Grammar::kMaxRepeat are built of blocks of 1000.
  const auto big = Compile(R"({"type": "string", "minLength": 1500, "maxLength": 2500})");
  for (size_t n : {1500, 1999, 2000, 2001, 2500}) {
    EXPECT_TRUE(Accepts(big, Quoted(std::string(n, 'x')))) << n;
  }
  for (size_t n : {0, 1499, 2501, 3000}) EXPECT_FALSE(Accepts(big, Quoted(std::string(n, 'x')))) << n;
  const auto at_most = Compile(R"({"type": "string", "maxLength": 3456})");
  for (size_t n : {0, 1, 999, 1000, 1001, 2999, 3000, 3456}) {
    EXPECT_TRUE(Accepts(at_most, Quoted(std::string(n, 'y')))) << n;
  }
  EXPECT_FALSE(Accepts(at_most, "\"" + std::string(3457, 'y') + "\""));

  const auto formats = Compile(R"({"type": "array", "prefixItems": [
      {"type": "string", "format": "date"}, {"type": "string", "format": "time"},
      {"type": "string", "format": "date-time"}, {"type": "string", "format": "uuid"}],
      "items": false, "minItems": 4})");
  ExpectValid(
      formats,
      R"(["2024-02-29", "23:59:60.5Z", "1999-12-31T00:00:00+05:30", "123e4567-e89b-12d3-a456-426614174000"])");
  ExpectValid(
      formats,
      R"(["0001-01-01", "00:00:00-12:00", "2000-01-01T12:34:56.123456789Z", "ABCDEF01-2345-6789-abcd-ef0123456789"])");
  for (const char* bad :
       {R"(["2024-13-01", "12:00:00Z", "2024-01-01T00:00:00Z", "123e4567-e89b-12d3-a456-426614174000"])",
        R"(["2024-01-32", "12:00:00Z", "2024-01-01T00:00:00Z", "123e4567-e89b-12d3-a456-426614174000"])",
        R"(["2024-01-01", "24:00:00Z", "2024-01-01T00:00:00Z", "123e4567-e89b-12d3-a456-426614174000"])",
        R"(["2024-01-01", "12:00:00", "2024-01-01T00:00:00Z", "123e4567-e89b-12d3-a456-426614174000"])",
        R"(["2024-01-01", "12:00:00Z", "2024-01-01 00:00:00Z", "123e4567-e89b-12d3-a456-426614174000"])",
        R"(["2024-01-01", "12:00:00Z", "2024-01-01T00:00:00Z", "123e4567-e89b-12d3-a456-42661417400"])",
        R"(["2024-01-01", "12:00:00Z", "2024-01-01T00:00:00Z", "123e4567-e89b-12d3-a456-42661417400g"])"}) {
    ExpectInvalid(formats, bad);
  }
}

TEST(JsonSchema, NonNegativeAndPositiveIntegers) {
  const auto non_negative = Compile(R"({"type": "integer", "minimum": 0})");
  for (const char* ok : {"0", "1", "907"}) ExpectValid(non_negative, ok);
  for (const char* bad : {"-1", "-0", "00"}) ExpectInvalid(non_negative, bad);
  const auto positive = Compile(R"({"type": "integer", "exclusiveMinimum": 0})");
  ExpectValid(positive, "12");
  for (const char* bad : {"0", "-3"}) ExpectInvalid(positive, bad);
  EXPECT_EQ(JsonSchemaToGbnf(R"({"type": "integer", "minimum": 1})"),
            JsonSchemaToGbnf(R"({"type": "integer", "exclusiveMinimum": 0})"));
  const auto number = Compile(R"({"type": "number", "minimum": 0})");
  ExpectValid(number, "0.5");
  ExpectInvalid(number, "-0.5");
}

TEST(JsonSchema, NestedObjectsInSchemaOrder) {
  const auto g = Compile(R"({"type": "object", "properties": {
      "name": {"type": "string"},
      "address": {"type": "object", "properties": {"street": {"type": "string"}, "zip": {"type": "integer"}},
                  "required": ["street", "zip"]},
      "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "address", "tags"]})");
  ExpectValid(g, R"({"name":"Ann","address":{"street":"Main","zip":12345},"tags":["a","b"]})");
  ExpectValid(g, R"({"name":"","address":{"street":"","zip":0},"tags":[]})");
  for (const char* bad :
       {R"({"name":"Ann","address":{"street":"Main"},"tags":[]})",                // zip missing
        R"({"name":"Ann","address":{"zip":1,"street":"Main"},"tags":[]})",        // order
        R"({"address":{"street":"Main","zip":1},"name":"Ann","tags":[]})",        // order
        R"({"name":"Ann","address":{"street":"Main","zip":1,"x":1},"tags":[]})",  // extra key
        R"({"name":"Ann","address":{"street":"Main","zip":"1"},"tags":[]})",      // wrong type
        R"({"name":"Ann","address":{"street":"Main","zip":1},"tags":[1]})",       // wrong item type
        R"({"name":"Ann","address":{"street":"Main","zip":1},"tags":[]} x)",      // trailing garbage
        R"({"name":"Ann","address":{"street":"Main","zip":1},"tags":[]}})",       // trailing brace
        R"({"name":"Ann","address":{"street":"Main","zip":1}})",                  // tags missing
        R"({"name":"Ann",,"address":{"street":"Main","zip":1},"tags":[]})",       // double comma
        R"({"name":"Ann","address":{"street":"Main","zip":1},"tags":[],})"}) {    // trailing comma
    ExpectInvalid(g, bad);
  }
  // Whitespace is bounded: one space, or a line end and at most 20 spaces or tabs.
  EXPECT_TRUE(
      Accepts(g, "{\n\t\t\"name\": \"A\",\n\"address\": {\"street\": \"B\", \"zip\": 1}, \"tags\": [\n]}"));
  EXPECT_FALSE(Accepts(g, R"({  "name":"A","address":{"street":"B","zip":1},"tags":[]})"));
  EXPECT_FALSE(
      Accepts(g, "{\n" + std::string(21, ' ') + R"("name":"A","address":{"street":"B","zip":1},"tags":[]})"));
  EXPECT_FALSE(Accepts(g, R"({"name":"A","address":{"street":"B","zip":1},"tags":[]} )"));
  EXPECT_FALSE(Accepts(g, R"( {"name":"A","address":{"street":"B","zip":1},"tags":[]})"));
}

TEST(JsonSchema, OptionalPropertiesInEveryCombination) {
  // a, b optional; c required; d, e optional: every subset of the optional ones, in order.
  const auto g =
      Compile(R"({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"},
      "c": {"type": "boolean"}, "d": {"type": "null"}, "e": {"type": "array"}}, "required": ["c"]})");
  const std::vector<std::pair<std::string, std::string>> members = {
      {"a", "1"}, {"b", "\"x\""}, {"c", "true"}, {"d", "null"}, {"e", "[1, \"y\"]"}};
  for (int mask = 0; mask < 32; ++mask) {
    std::string text = "{";
    for (size_t i = 0; i < members.size(); ++i) {
      if ((mask >> i & 1) == 0) continue;
      if (text.size() > 1) text += ",";
      text += "\"" + members[i].first + "\":" + members[i].second;
    }
    text += "}";
    if (mask & 4) {
      ExpectValid(g, text);
    } else {
      ExpectInvalid(g, text);  // c missing
    }
  }
  for (const char* bad :
       {R"({"b":"x","a":1,"c":true})", R"({"c":true,"a":1})", R"({"a":1,"c":true,"e":[],"d":null})",
        R"({,"c":true})", R"({"c":true,})", R"({"a":1,"c":true,"a":1})", R"({"c":true,"f":1})"}) {
    ExpectInvalid(g, bad);
  }

  // All optional: the empty object too.
  const auto all =
      Compile(R"({"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"},
      "z": {"type": "integer"}}})");
  for (int mask = 0; mask < 8; ++mask) {
    std::string text = "{";
    for (int i = 0; i < 3; ++i) {
      if ((mask >> i & 1) == 0) continue;
      if (text.size() > 1) text += ",";
      text += Quoted(std::string(1, static_cast<char>('x' + i)));
      text += ':';
      text += std::to_string(i);
    }
    ExpectValid(all, text + "}");
  }
  for (const char* bad :
       {R"({"y":1,"x":0})", R"({"z":2,"y":1})", R"({,})", R"({"x":0,})", R"({"w":0})", R"()"}) {
    ExpectInvalid(all, bad);
  }
}

TEST(JsonSchema, AdditionalProperties) {
  const auto any =
      Compile(R"({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"],
      "additionalProperties": true})");
  ExpectValid(any, R"({"id":1})");
  ExpectValid(any, R"({"id":1,"x":"y","z":[1,{"k":null}],"w":{"v":false}})");
  for (const char* bad :
       {R"({"x":1,"id":1})", R"({"id":1,"x"})", R"({"id":1,x:1})", R"({})", R"({"id":1,"x":1,})"}) {
    ExpectInvalid(any, bad);
  }
  const auto typed = Compile(R"({"type": "object", "properties": {"id": {"type": "integer"}},
      "additionalProperties": {"type": "string"}})");
  ExpectValid(typed, R"({})");
  ExpectValid(typed, R"({"id":1,"a":"b","c":"d"})");
  ExpectValid(typed, R"({"a":"b"})");
  ExpectInvalid(typed, R"({"id":1,"a":2})");
  ExpectInvalid(typed, R"({"a":"b","id":1})");
  const auto closed = Compile(R"({"type": "object", "properties": {"id": {"type": "integer"}},
      "additionalProperties": false})");
  ExpectInvalid(closed, R"({"id":1,"a":"b"})");
  // No properties: any object (absent), or any members of a type.
  const auto object = Compile(R"({"type": "object"})");
  ExpectValid(object, R"({"a":[1,{"b":{}}],"c":null})");
  ExpectInvalid(object, R"([])");
  const auto map = Compile(R"({"type": "object", "additionalProperties": {"type": "integer"}})");
  ExpectValid(map, R"({"a":1,"b":2})");
  ExpectValid(map, R"({})");
  ExpectInvalid(map, R"({"a":"1"})");
}

TEST(JsonSchema, ArraysWithBounds) {
  const auto g = Compile(R"({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4})");
  for (const char* ok : {"[1,2]", "[1,2,3]", "[1,2,3,4]"}) ExpectValid(g, ok);
  for (const char* bad : {"[]", "[1]", "[1,2,3,4,5]", "[1,2,]", "[1,\"2\"]", "[,1,2]", "[1 2]"})
    ExpectInvalid(g, bad);

  const auto any = Compile(R"({"type": "array"})");
  ExpectValid(any, R"([])");
  ExpectValid(any, R"([1,"a",null,[true,{}],{"k":[]}])");
  ExpectInvalid(any, R"({})");

  const auto none = Compile(R"({"type": "array", "maxItems": 0})");
  ExpectValid(none, "[]");
  ExpectInvalid(none, "[1]");

  // A tuple, exactly.
  const auto tuple = Compile(R"({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}],
      "items": false, "minItems": 2})");
  ExpectValid(tuple, R"(["a",1])");
  for (const char* bad : {R"(["a"])", R"(["a",1,2])", R"([1,"a"])", R"([])"}) ExpectInvalid(tuple, bad);
  // A prefix, then more items; shorter arrays are allowed without minItems.
  const auto prefix = Compile(R"({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}],
      "items": {"type": "boolean"}, "maxItems": 4})");
  for (const char* ok : {R"([])", R"(["a"])", R"(["a",1])", R"(["a",1,true])", R"(["a",1,true,false])"}) {
    ExpectValid(prefix, ok);
  }
  for (const char* bad : {R"([1])", R"(["a",1,2])", R"(["a",1,true,false,true])", R"(["a",true])"}) {
    ExpectInvalid(prefix, bad);
  }
  // Draft 4-7's tuples: items as an array, additionalItems after it.
  const auto old =
      Compile(R"({"type": "array", "items": [{"type": "integer"}], "additionalItems": {"type": "null"}})");
  ExpectValid(old, "[1,null,null]");
  ExpectInvalid(old, "[1,2]");
}

// A tuple of objects: its rules are root-0 and root-1, named after their places, and root's
// optional groups come before root-1 is named. (Grammar::Parse must not give its own generated
// rules names that the text defines later.)
TEST(JsonSchema, TupleOfObjects) {
  const auto g = Compile(R"({"type": "array", "prefixItems": [
      {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
      {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]}], "items": false})");
  for (const char* ok : {R"([])", R"([{"a":1}])", R"([{"a":1},{"b":"x"}])"}) ExpectValid(g, ok);
  for (const char* bad : {R"([{"b":"x"}])", R"([{"a":1},{"a":1}])", R"([{"a":1},{"b":"x"},{"a":1}])"}) {
    ExpectInvalid(g, bad);
  }
}

TEST(JsonSchema, EnumAndConstOfMixedValues) {
  const auto g = Compile(R"({"enum": ["red", 1, 2.5, true, null, {"a": [1, 2]}, [1, "x"], "\u00e9\"\n"]})");
  for (const char* ok : {R"("red")", "1", "2.5", "true", "null", R"({"a":[1,2]})", R"([1,"x"])"}) {
    ExpectValid(g, ok);
  }
  // Strings as dump() spells them: UTF-8 as it is, only the escapes JSON requires.
  EXPECT_TRUE(Accepts(g, R"("é\"\n")"));
  EXPECT_FALSE(Accepts(g, R"("\u00e9\"\n")"));
  for (const char* bad : {R"("blue")", R"("Red")", "2", "1.0", "false", R"("null")", R"({"a":[1]})",
                          R"({"a":[1,2],"b":1})", R"([1,"y"])", "red", R"("red" )"}) {
    ExpectInvalid(g, bad);
  }
  // "type" filters the values.
  const auto strings = Compile(R"({"type": "string", "enum": ["a", 1, "b"]})");
  ExpectValid(strings, R"("a")");
  ExpectInvalid(strings, "1");
  const auto constant = Compile(R"({"type": "object", "properties": {"kind": {"const": "circle"},
      "r": {"type": "number"}}, "required": ["kind", "r"]})");
  ExpectValid(constant, R"({"kind":"circle","r":1.5})");
  ExpectInvalid(constant, R"({"kind":"square","r":1.5})");
}

TEST(JsonSchema, AnyOfOneOfAndTypeLists) {
  const auto g = Compile(R"({"anyOf": [{"type": "string", "maxLength": 2}, {"type": "integer"},
      {"type": "object", "properties": {"k": {"type": "null"}}, "required": ["k"]}]})");
  for (const char* ok : {R"("")", R"("ab")", "-3", R"({"k":null})"}) ExpectValid(g, ok);
  for (const char* bad : {R"("abc")", "1.5", "true", R"({})", "[]"}) ExpectInvalid(g, bad);
  const auto one = Compile(R"({"oneOf": [{"type": "boolean"}, {"type": "null"}]})");
  ExpectValid(one, "true");
  ExpectValid(one, "null");
  ExpectInvalid(one, "0");
  const auto list = Compile(R"({"type": ["string", "null"], "maxLength": 1})");
  ExpectValid(list, R"("a")");
  ExpectValid(list, "null");
  ExpectInvalid(list, R"("ab")");
  ExpectInvalid(list, "1");
}

TEST(JsonSchema, AllOfMergesObjects) {
  const auto g = Compile(R"({"$defs": {"base": {"type": "object", "properties": {"id": {"type": "integer"}},
      "required": ["id"]}},
    "allOf": [{"$ref": "#/$defs/base"}, {"properties": {"name": {"type": "string"}}, "required": ["name"]}]})");
  ExpectValid(g, R"({"id":1,"name":"x"})");
  for (const char* bad :
       {R"({"id":1})", R"({"name":"x"})", R"({"name":"x","id":1})", R"({"id":1,"name":"x","z":1})"}) {
    ExpectInvalid(g, bad);
  }
}

TEST(JsonSchema, RecursiveRefs) {
  const auto tree = Compile(R"({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {
      "value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
      "required": ["value"]}}})");
  ExpectValid(tree, R"({"value":1})");
  ExpectValid(tree,
              R"({"value":1,"children":[{"value":2,"children":[]},{"value":3,"children":[{"value":4}]}]})");
  for (const char* bad :
       {R"({"value":1,"children":[{}]})", R"({"value":1,"children":[1]})", R"({"children":[]})"}) {
    ExpectInvalid(tree, bad);
  }
  // "definitions", pointer escapes (~1 is "/", ~0 is "~"), and the root itself ("#").
  const auto list = Compile(R"({"type": "object", "properties": {"head": {"$ref": "#/definitions/a~1b~0c"},
      "tail": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}, "required": ["head", "tail"],
      "definitions": {"a/b~c": {"type": "string"}}})");
  ExpectValid(list, R"({"head":"x","tail":{"head":"y","tail":null}})");
  ExpectInvalid(list, R"({"head":"x","tail":{"head":1,"tail":null}})");
  ExpectInvalid(list, R"({"head":"x","tail":{"head":"y"}})");
}

TEST(JsonSchema, AnyValue) {
  for (const char* schema : {"true", "{}", R"({"description": "anything"})"}) {
    const auto g = Compile(schema);
    for (const char* ok : {"1", "-2.5e3", R"("s")", "true", "null", "[]", R"({"a":[1,{"b":null}]})"}) {
      ExpectValid(g, ok);
    }
    for (const char* bad : {"", "nul", "[1,]", R"({"a"})", "01", "'s'"}) ExpectInvalid(g, bad);
  }
}

TEST(JsonSchema, RulesOnePerLineRootFirstNamesSanitized) {
  const std::string gbnf = JsonSchemaToGbnf(R"({"type": "object", "properties": {
      "first name": {"type": "string", "maxLength": 5}, "first_name": {"type": "string", "maxLength": 6},
      "string": {"type": "string", "maxLength": 7}, "été": {"type": "array", "items": {"type": "integer"}},
      "plain": {"type": "string"}}, "required": ["first name", "first_name", "string", "été"]})");
  std::istringstream lines(gbnf);
  std::string line;
  std::vector<std::string> names;
  while (std::getline(lines, line)) {  // name ::= body, the name [A-Za-z0-9-]+
    const size_t arrow = line.find(" ::= ");
    ASSERT_TRUE(arrow != std::string::npos && arrow > 0 && arrow + 5 < line.size()) << line;
    const std::string name = line.substr(0, arrow);
    EXPECT_TRUE(std::all_of(name.begin(), name.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '-';
    })) << line;
    names.push_back(name);
  }
  ASSERT_FALSE(names.empty());
  const auto g = Grammar::Parse(gbnf);
  EXPECT_TRUE(Accepts(g, R"({"first name":"a","first_name":"b","string":"c","été":[1],"plain":""})"));
  EXPECT_FALSE(Accepts(g, R"({"first name":"a","first_name":"b","string":"c","ete":[1]})"));
  EXPECT_EQ(names[0], "root");
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::adjacent_find(names.begin(), names.end()), names.end()) << gbnf;
  EXPECT_NE(gbnf.find("first-name ::="), std::string::npos) << gbnf;
  EXPECT_NE(gbnf.find("first-name-1 ::="), std::string::npos) << gbnf;
  EXPECT_NE(gbnf.find("string ::= \"\\\"\" char* \"\\\"\""), std::string::npos) << gbnf;  // the primitive
  EXPECT_NE(gbnf.find("string-1 ::="), std::string::npos) << gbnf;                        // the property
  // Identical sub-grammars share a rule.
  const std::string shared = JsonSchemaToGbnf(R"({"type": "object", "properties": {
      "a": {"type": "string", "maxLength": 3}, "b": {"type": "string", "maxLength": 3}}, "required": ["a", "b"]})");
  EXPECT_EQ(shared.find("b ::="), std::string::npos) << shared;
  // A schema given as nlohmann::json (keys sorted) and as text (the schema's order).
  const auto sorted = Grammar::Parse(JsonSchemaToGbnf(nlohmann::json::parse(
      R"({"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "integer"}}, "required": ["a", "b"]})")));
  EXPECT_TRUE(Accepts(sorted, R"({"a":1,"b":2})"));
  EXPECT_FALSE(Accepts(sorted, R"({"b":2,"a":1})"));
}

TEST(JsonSchema, UnsupportedSchemasNameWhat) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"type": "string", "pattern": "^(a)\\1$"})", R"(backreference \1 is not supported at the root)"},
      {R"({"type": "object", "properties": {"a": {"if": {}}}})",
       R"(unsupported keyword "if" at /properties/a)"},
      {R"({"type": "integer", "minimum": 5})", R"("minimum")"},
      {R"({"type": "number", "maximum": 5})", R"(unsupported keyword "maximum")"},
      {R"({"type": "integer", "exclusiveMaximum": 5})", R"(unsupported keyword "exclusiveMaximum")"},
      {R"({"type": "integer", "exclusiveMinimum": 3})", R"("exclusiveMinimum")"},
      {R"({"type": "number", "multipleOf": 2})", R"(unsupported keyword "multipleOf")"},
      {R"({"type": "string", "format": "email"})", R"(unsupported format "email")"},
      {R"({"type": "array", "uniqueItems": true})", R"(unsupported keyword "uniqueItems")"},
      {R"({"type": "array", "contains": {}})", R"(unsupported keyword "contains")"},
      {R"({"type": "object", "minProperties": 1})", R"(unsupported keyword "minProperties")"},
      {R"({"type": "object", "maxProperties": 1})", R"(unsupported keyword "maxProperties")"},
      {R"({"type": "object", "patternProperties": {}})", R"(unsupported keyword "patternProperties")"},
      {R"({"type": "object", "propertyNames": {}})", R"(unsupported keyword "propertyNames")"},
      {R"({"type": "object", "dependentRequired": {}})", R"(unsupported keyword "dependentRequired")"},
      {R"({"items": {"items": {"nullable": true}}})", R"(unsupported keyword "nullable" at /items/items)"},
      {R"({"$ref": "https://example.com/s.json"})", R"($ref "https://example.com/s.json" is not supported)"},
      {R"({"$ref": "#/$defs/missing"})", R"($ref "#/$defs/missing" points to nothing)"},
      {R"({"type": "strin"})", R"(unsupported type "strin")"},
      {R"({"type": 3})", R"("type" must be a string)"},
      {R"(5)", "a schema must be an object or a boolean, not 5"},
      {R"({"properties": {"a": "x"}})",
       R"(a schema must be an object or a boolean, not "x" at /properties/a)"},
      {R"(false)", "schema false admits no value"},
      {R"({"type": "object", "properties": {"a": {}}, "required": ["b"]})",
       R"(required property "b" is not in)"},
      {R"({"type": "array", "minItems": 3, "maxItems": 2})", "minItems = 3 is over maxItems = 2"},
      {R"({"type": "array", "minItems": -1})", R"("minItems" must be a non-negative integer)"},
      {R"({"type": "string", "minLength": 5, "maxLength": 2})", "minLength = 5 is over maxLength = 2"},
      {R"({"type": "string", "maxLength": 2000000})", R"("maxLength" = 2000000 is over 1000000)"},
      {R"({"type": "array", "prefixItems": [{}], "items": false, "minItems": 2})", "admit at most 1"},
      {R"({"enum": [1, 2], "type": "string"})", R"(no value of "enum")"},
      {R"({"allOf": [{"type": "string"}]})", R"("allOf" is supported only over object schemas)"},
      {R"({"$ref": "#/$defs/a", "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}, {"type": "null"}]},
          "b": {"$ref": "#/$defs/a"}}})",
       R"($ref cycle #/$defs/a -> #/$defs/b -> #/$defs/a)"},
      {R"({"$ref": "#", "type": "string"})", R"(keyword "type" beside "$ref")"},
      {R"({"type": "object", "properties": {"a": {}})", "json_schema: not valid JSON: "},
      // A number past a double (found by fuzz/json_schema_fuzz.cc): nlohmann's out_of_range.
      {R"({"type": "integer", "minimum": 123e4567})", "json_schema: not valid JSON: "},
  };
  for (const auto& [schema, message] : cases) {
    const std::string error = ErrorOf(schema);
    EXPECT_NE(error.find("json_schema: "), std::string::npos) << schema;
    EXPECT_NE(error.find(message), std::string::npos) << schema << "\n  gave: " << error;
  }
  // Nested past 64 schemas.
  std::string deep = "{}";
  for (int i = 0; i < 70; ++i) deep = R"({"type": "array", "items": )" + deep + "}";
  EXPECT_NE(ErrorOf(deep).find("nested deeper than 64"), std::string::npos);
  deep = "1";
  for (int i = 0; i < 100000; ++i) deep = "[" + deep;
  deep = R"({"const": )" + deep + std::string(100000, ']') + "}";
  EXPECT_NE(ErrorOf(deep).find("JSON nests deeper than 512"), std::string::npos);
}

// "pattern": the grammar admits the JSON strings whose contents match the regular expression
// (anchored only where it says ^ / $), each character spelled as JSON writes it.
TEST(JsonSchema, PatternsOnStrings) {
  struct Case {
    std::string pattern;
    std::vector<std::string> valid, invalid;  // JSON texts
  };
  const std::vector<Case> cases = {
      {"^[a-z]+$", {R"("abc")", R"("z")"}, {R"("")", R"("aBc")", R"("ab1")", R"("abc )", "abc"}},
      {R"(^\d{3}-\d{4}$)",
       {R"("555-1234")"},
       {R"("55-1234")", R"("5551234")", R"("555-12345")", R"("abc-defg")"}},
      {"^(red|green|blue)$", {R"("red")", R"("green")", R"("blue")"}, {R"("redd")", R"("")", R"("gren")"}},
      {"^[A-Z][a-z]*( [A-Z][a-z]*)*$",
       {R"("Hello")", R"("Hello World X")", R"("A")"},
       {R"("hello")", R"("Hello world")", R"("Hello ")", R"("")"}},
      {"ab",
       {R"("ab")", R"("xxabyy")", R"("abab")", R"("\"ab\n")"},
       {R"("a")", R"("")", R"("ba")", R"("xaxb")"}},
      {"^abc", {R"("abc")", R"("abcdef")"}, {R"("xabc")", R"("ab")"}},
      {"xyz$", {R"("xyz")", R"("wxyz")"}, {R"("xyzw")"}},
      {"^a|b$", {R"("ax")", R"("xb")", R"("a")"}, {R"("xa")", R"("bx")"}},
      {"^a.c$",
       {R"("abc")", R"("a c")", R"("a\"c")", R"("a\\c")", R"("a\tc")",
        "\"a\xC3\xA9"
        "c\"",
        R"("a\u0001c")"},
       {R"("ac")", R"("a\nc")", R"("a\rc")", R"("abbc")", "\"a\nc\""}},
      {"^[^0-9]+$",
       {R"("abc")", R"("a b")", R"("\"")", R"("\n")", R"("\\")"},
       {R"("a1")", R"("")", R"("9")"}},
      {R"(^\w+@\w+\.com$)",
       {R"("joe@example.com")", R"("a_1@b.com")"},
       {R"("joe@example.org")", R"("joe@examplecom")", R"("@x.com")", R"("j.e@x.com")"}},
      {"^(?:ab)+$", {R"("ab")", R"("abab")"}, {R"("")", R"("aba")", R"("ba")"}},
      {"^x{2,3}$", {R"("xx")", R"("xxx")"}, {R"("x")", R"("xxxx")"}},
      {"^x{2}y{1,}z*?$", {R"("xxy")", R"("xxyyzz")"}, {R"("xy")", R"("xxz")"}},
      {R"(^\u00e9+$)", {"\"\xC3\xA9\"", "\"\xC3\xA9\xC3\xA9\""}, {R"("e")", R"("")", R"("\u00e9")"}},
      // A backslash and a quote: in the JSON text, \\ and \".
      {R"(^[\\"]+$)", {R"("\\")", R"("\"")", R"("\\\"\\")"}, {R"("\")", R"("a")", R"("")"}},
      {R"(^a\nb\/c$)", {R"("a\nb/c")", R"("a\nb\/c")"}, {"\"a\nb/c\"", R"("anb/c")"}},
      {R"(^[\x00-\x1f]$)", {R"("\u0001")", R"("\u001F")", R"("\u001f")", R"("\t")"}, {R"("a")", "\"\x01\""}},
      {R"(^[\s]$)", {R"(" ")", R"("\t")", "\"\xE3\x80\x80\""}, {R"("a")"}},
      {R"(^\(\d\)[.?*+]$)", {R"("(1).")", R"("(2)?")"}, {R"("(1)a")", R"("1.")"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.pattern);
    const std::string schema = Json({{"type", "string"}, {"pattern", c.pattern}}).dump();
    std::shared_ptr<Grammar> g;
    ASSERT_NO_THROW(g = Compile(schema)) << ErrorOf(schema);
    for (const std::string& text : c.valid) EXPECT_TRUE(Accepts(g, text)) << "refused: " << text;
    for (const std::string& text : c.invalid) EXPECT_FALSE(Accepts(g, text)) << "accepted: " << text;
  }
  // Without "type": a string; in a property, the rule named after it.
  const auto g = Compile(R"({"type": "object", "properties": {"code": {"pattern": "^[A-Z]{2}$"}},
      "required": ["code"]})");
  EXPECT_TRUE(Accepts(g, R"({"code":"AB"})"));
  EXPECT_FALSE(Accepts(g, R"({"code":"ABC"})"));
  EXPECT_FALSE(Accepts(g, R"({"code":12})"));
}

TEST(JsonSchema, UnsupportedPatternsNameWhat) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"(^(a)\1$)", R"(backreference \1 is not supported)"},
      {R"(^(?<n>a)\k<n>$)", "named group (?< is not supported"},
      {"^(?=a)a$", "lookahead (?= is not supported"},
      {"^(?!a)b$", "lookahead (?! is not supported"},
      {"(?<=a)b", "lookbehind (?<= is not supported"},
      {R"(\bfoo)", R"(word boundary \b is not supported)"},
      {"a^b", R"(anchor "^" after the start is not supported)"},
      {"a$b", R"(anchor "$" before the end is not supported)"},
      {"(^a)", R"(anchor "^" after the start)"},
      {"(ab", "unbalanced parenthesis \"(\""},
      {"ab)", "unbalanced parenthesis \")\""},
      {"[ab", R"(unbalanced bracket "[")"},
      {"*a", R"(nothing to repeat before "*")"},
      {"a{1001}", "a count over 1000"},
      {"a{3,2}", "n < m"},
      {"[b-a]", "range out of order"},
      {"[]", "empty class"},
      {R"([\d-z])", "range of a class escape"},
      {R"(\p{L})", R"(Unicode property escape \p)"},
      {R"(\u{1F600})", R"(escape \u not followed by 4 hex digits)"},
      {R"(\q)", R"(escape \q is not supported)"},
      {"(a*)*", "repetition (*, + or {m,}) of what can match the empty string"},
      {"(?i)a", "group (?i is not supported"},
      {"a\\", R"(a "\" at the end)"},
  };
  for (const auto& [pattern, message] : cases) {
    const std::string schema = Json({{"type", "string"}, {"pattern", pattern}}).dump();
    const std::string error = ErrorOf(schema);
    EXPECT_NE(error.find("json_schema: pattern "), std::string::npos) << pattern << "\n  gave: " << error;
    EXPECT_NE(error.find(message), std::string::npos) << pattern << "\n  gave: " << error;
    EXPECT_NE(error.find("at the root"), std::string::npos) << pattern << "\n  gave: " << error;
  }
  EXPECT_NE(
      ErrorOf(R"j({"properties": {"p": {"type": "string", "pattern": "(?=x)"}}})j").find("at /properties/p"),
      std::string::npos);
  EXPECT_NE(ErrorOf(R"({"type": "string", "pattern": "^a+$", "maxLength": 3})")
                .find(R"("maxLength" beside "pattern" is not supported)"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"type": "string", "pattern": "^a+$", "format": "date"})")
                .find(R"("format" beside "pattern" is not supported)"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"type": "string", "pattern": 5})").find(R"("pattern" must be a string)"),
            std::string::npos);
}

// llama.cpp's grammars (tests/fixtures/make_json_schema_fixture.py) read by attn's GBNF parser, and
// attn's grammars for the same schemas, on instances llama.cpp's own matcher labelled.
TEST(JsonSchema, AgreesWithLlamaCpp) {
  std::ifstream in(std::string(ATTN_FIXTURES_DIR) + "/json_schema_llamacpp.json");
  ASSERT_TRUE(in) << "missing fixture json_schema_llamacpp.json";
  const Json fixture = Json::parse(in);
  ASSERT_GE(fixture["cases"].size(), 10u);
  for (const Json& c : fixture["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    std::shared_ptr<Grammar> llama, ours;
    try {
      llama = Grammar::Parse(c["llama_gbnf"].get<std::string>());
    } catch (const Error& e) {
      ADD_FAILURE() << "attn's parser refuses llama.cpp's grammar: " << e.what() << "\n" << c["llama_gbnf"];
      continue;
    }
    // Schemas attn's converter refuses (attn_supports: false; none at present) test the parser only.
    const bool supported = c.value("attn_supports", true);
    if (supported) {
      ASSERT_NO_THROW(ours = Grammar::Parse(JsonSchemaToGbnf(c["schema"])));
    } else {
      EXPECT_THROW(JsonSchemaToGbnf(c["schema"]), Error);
    }
    for (const Json& text : c["valid"]) {
      EXPECT_TRUE(Accepts(llama, text.get<std::string>())) << "llama.cpp's grammar refuses " << text;
      if (supported) {
        EXPECT_TRUE(Accepts(ours, text.get<std::string>())) << "attn's grammar refuses " << text;
      }
    }
    for (const Json& text : c["invalid"]) {
      EXPECT_FALSE(Accepts(llama, text.get<std::string>())) << "llama.cpp's grammar accepts " << text;
      if (supported) {
        EXPECT_FALSE(Accepts(ours, text.get<std::string>())) << "attn's grammar accepts " << text;
      }
    }
  }
}

}  // namespace
}  // namespace attn
