#include "model/grammar_regions.h"

#include <algorithm>
#include <utility>

#include "attn/error.h"

namespace attn {

GrammarRegions::GrammarRegions(const std::vector<TriggeredGrammar>& specs) {
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::string name = "triggered_grammars[" + std::to_string(i) + "]";
    for (size_t j = 0; j < i; ++j)
      if (specs[j].trigger == specs[i].trigger)
        throw Error(name + ": the trigger \"" + specs[i].trigger + "\" is also triggered_grammars[" +
                    std::to_string(j) + "]'s");
    Spec s;
    s.trigger = specs[i].trigger;
    try {
      s.grammar = Grammar::Parse(specs[i].grammar);
    } catch (const Error& e) {
      throw Error(name + " (trigger \"" + specs[i].trigger + "\"): " + e.what());
    }
    s.masks = std::make_unique<TokenMaskCache>();
    longest_ = std::max(longest_, s.trigger.size());
    specs_.push_back(std::move(s));
  }
  for (size_t i = 0; i < specs_.size(); ++i) {
    if (!specs_[i].trigger.empty()) continue;
    matcher_.emplace(specs_[i].grammar);
    open_ = static_cast<int>(i);
    ++opened_;
  }
}

const GrammarMatcher* GrammarRegions::constraint() const {
  return open_ >= 0 && !matcher_->complete() ? &*matcher_ : nullptr;
}

TokenMaskCache* GrammarRegions::masks() const {
  return open_ >= 0 ? specs_[static_cast<size_t>(open_)].masks.get() : nullptr;
}

bool GrammarRegions::Feed(std::string_view piece) {
  text_ += piece;
  size_t from = text_.size() - piece.size();
  bool ok = true;
  for (;;) {
    if (open_ >= 0) {
      const size_t stop = Take(from);
      if (stop == text_.size()) {
        scan_ = text_.size();
        return ok;
      }
      if (refused_complete_) {
        ++completed_;
      } else {
        ok = false;
      }
      open_ = -1;
      matcher_.reset();
      scan_ = stop;
    }
    if (!Look(&from)) return ok;
  }
}

size_t GrammarRegions::Take(size_t from) {
  for (size_t k = from; k < text_.size(); ++k) {
    const bool complete = matcher_->complete();
    if (!matcher_->Feed(static_cast<uint8_t>(text_[k]))) {
      refused_complete_ = complete;
      return k;
    }
  }
  return text_.size();
}

bool GrammarRegions::Look(size_t* from) {
  size_t at = std::string::npos;
  int which = -1;
  for (size_t i = 0; i < specs_.size(); ++i) {
    const std::string& t = specs_[i].trigger;
    if (t.empty()) continue;
    const size_t p = text_.find(t, scan_);
    if (p != std::string::npos &&
        (p < at || (p == at && t.size() > specs_[static_cast<size_t>(which)].trigger.size())))
      at = p, which = static_cast<int>(i);
  }
  if (which < 0) {  // none: only a trigger's start at the end may still complete
    scan_ = std::max(scan_, text_.size() - std::min(text_.size(), longest_ > 0 ? longest_ - 1 : 0));
    return false;
  }
  const Spec& s = specs_[static_cast<size_t>(which)];
  matcher_.emplace(s.grammar);
  open_ = which;
  ++opened_;
  *from = at + s.trigger.size();
  return true;
}

}  // namespace attn
