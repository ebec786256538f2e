from tests.conftest import ADMIN, BotUnderTest


async def test_wa_to_alias(bot: BotUnderTest) -> None:
    text = await bot.reply_text("/wa alice server db-1 is down", user=ADMIN)
    assert text == "WhatsApp (instance 0)\nalice: queued"
