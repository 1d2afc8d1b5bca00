// Grammars that constrain parts of a generated text (GenerateOptions::triggered_grammars, llama.cpp's
// "lazy" grammars): what attn serve uses to keep the tool calls of a model's own format well formed
// while the text around them stays free.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "attn/generate.h"
#include "model/grammar.h"

namespace attn {

// The regions of a text as it grows: free until one of the triggers appears in it; the text right
// after the trigger must then follow that trigger's grammar (a region). Once the region's text is
// a complete sentence, the text may go on with it ("add" may go on to "add_numbers") or leave it:
// the first byte the grammar does not take closes the region, and the triggers are looked for
// again from there. Of two triggers at the same place the longer counts. The empty trigger opens a
// region at the start of the text. Regions are found the same wherever the text is cut into pieces.
class GrammarRegions {
 public:
  // Throws attn::Error naming triggered_grammars[i] for a grammar that does not parse, and for a
  // trigger given twice.
  explicit GrammarRegions(const std::vector<TriggeredGrammar>& specs);

  // The matcher the next piece must keep alive: the open region's while its text is not a
  // complete sentence; null when the next piece is free. masks(): that grammar's mask cache.
  const GrammarMatcher* constraint() const;
  TokenMaskCache* masks() const;

  // One more piece of the text (a control token's as it is written). False when a region's grammar
  // refused a byte before its sentence was complete (the region is dropped and the text goes on
  // free from that byte; in generation the mask prevents it, unless the piece that completed a
  // trigger carried such text on).
  bool Feed(std::string_view piece);

  int opened() const { return opened_; }        // regions opened so far
  int completed() const { return completed_; }  // regions closed with a complete sentence

 private:
  struct Spec {
    std::string trigger;
    std::shared_ptr<Grammar> grammar;
    std::unique_ptr<TokenMaskCache> masks;
  };
  // Feeds text_ from `from` on to the open region; where it stopped (text_.size(): all taken).
  size_t Take(size_t from);
  // Opens the region of the first trigger from scan_ on and sets *from to the trigger's end;
  // false when there is none.
  bool Look(size_t* from);

  std::vector<Spec> specs_;
  size_t longest_ = 0;  // the longest trigger's length
  std::string text_;
  size_t scan_ = 0;  // triggers that start before scan_ were dealt with
  int open_ = -1;    // the open region's spec, -1 when none is
  std::optional<GrammarMatcher> matcher_;
  bool refused_complete_ = false;  // the sentence was complete where Take last stopped
  int opened_ = 0, completed_ = 0;
};

}  // namespace attn
