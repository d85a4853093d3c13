#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

namespace dcomp {
namespace {

std::vector<float> Logits() { return {0.1f, 2.0f, 1.9f, -1.0f, 0.5f, 1.95f}; }

std::vector<int32_t> Draw(SamplingParams p, int n) {
  Sampler s(p);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = Logits();
    out.push_back(s.Sample(l, out));
  }
  return out;
}

TEST(SamplerTest, GreedyIsArgmax) {
  SamplingParams p;
  EXPECT_EQ(Draw(p, 3), (std::vector<int32_t>{1, 1, 1}));
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDiffers) {
  SamplingParams p;
  p.temperature = 1.5f;
  p.seed = 42;
  EXPECT_EQ(Draw(p, 50), Draw(p, 50));
  SamplingParams q = p;
  q.seed = 43;
  EXPECT_NE(Draw(p, 50), Draw(q, 50));
}

TEST(SamplerTest, FiltersRestrictTheChoice) {
  SamplingParams p;
  p.temperature = 5.0f;
  p.top_k = 1;
  for (int32_t t : Draw(p, 20)) EXPECT_EQ(t, 1);
  p.top_k = 3;
  for (int32_t t : Draw(p, 200)) EXPECT_TRUE(t == 1 || t == 5 || t == 2) << t;
  p.top_k = 0;
  p.top_p = 0.01f;
  for (int32_t t : Draw(p, 20)) EXPECT_EQ(t, 1);
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  for (int32_t t : Draw(p, 20)) EXPECT_EQ(t, 1);
  // All six tokens are reachable without filters at a high temperature.
  p.min_p = 0.0f;
  std::vector<int32_t> d = Draw(p, 2000);
  for (int32_t id = 0; id < 6; ++id) EXPECT_NE(std::find(d.begin(), d.end(), id), d.end()) << id;
}

TEST(SamplerTest, RepetitionPenaltyAvoidsRepeats) {
  SamplingParams p;
  p.repetition_penalty = 1.5f;
  std::vector<int32_t> d = Draw(p, 3);
  EXPECT_EQ(d[0], 1);
  EXPECT_NE(d[1], 1);  // 2.0 / 1.5 < 1.95
}

TEST(SamplerTest, ValidationNamesTheField) {
  SamplingParams p;
  p.top_p = 1.5f;
  EXPECT_NE(p.Validate().message().find("top_p"), std::string::npos);
  p = {};
  p.min_p = -0.1f;
  EXPECT_NE(p.Validate().message().find("min_p"), std::string::npos);
  p = {};
  p.temperature = std::nanf("");
  EXPECT_NE(p.Validate().message().find("temperature"), std::string::npos);
  p = {};
  p.top_k = -1;
  EXPECT_FALSE(p.Validate().ok());
  p = {};
  p.repetition_penalty = 0.0f;
  EXPECT_FALSE(p.Validate().ok());
  EXPECT_TRUE(SamplingParams{}.Validate().ok());
}

}  // namespace
}  // namespace dcomp
