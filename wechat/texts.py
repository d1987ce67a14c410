"""What the bot says: every Chinese prompt and reply in one place, so wording can be reviewed together."""

from __future__ import annotations

REPORT_WORDS = frozenset({"我要上报", "上报", "举报", "我要举报", "随手拍", "我要反映", "我要投诉"})
CANCEL_WORDS = frozenset({"取消", "退出", "不报了", "算了", "取消上报"})
HELP_WORDS = frozenset({"帮助", "help", "?", "？", "菜单", "办事指南", "使用帮助", "你好", "您好", "在吗", "hi", "hello"})
MY_CASES_WORDS = frozenset({"我的案件", "我的上报", "查询进度", "案件进度", "进度查询", "我的举报"})
POINTS_WORDS = frozenset({"我的积分", "积分", "积分查询"})
DONE_WORDS = frozenset({"完成", "好了", "发完了", "没有了", "没有", "无", "跳过", "不用了", "ok", "好", "下一步", "就这些"})
CONFIRM_WORDS = frozenset({"确认", "1", "确定", "提交", "是", "对", "没问题", "确认提交", "好的", "可以"})
EDIT_WORDS = frozenset({"修改", "2", "改", "重新填写", "更改"})
CANCEL_CONFIRM_WORDS = frozenset({"3"})
HERE_WORDS = frozenset({"1", "当前位置", "我的位置", "就在这里", "这里"})
FAQ_WORDS = frozenset({"常见问题", "咨询"})

SCORE_LABELS = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}

MENU_KEYS = {
    "REPORT": "我要上报",
    "MY_CASES": "我的案件",
    "RATE": "评价",
    "POINTS": "我的积分",
    "BIND": "绑定手机",
    "HELP": "帮助",
    "FAQ": "常见问题",
}


def welcome(account: str, hotline: str) -> str:
    """Greeting on follow."""
    return (f"感谢关注{account}！发现井盖破损、垃圾堆积、占道经营等城市管理问题，"
            "点击菜单“我要上报”或直接回复“上报”，按提示描述问题、发送照片和位置即可。\n\n" + help_text(hotline))


def help_text(hotline: str) -> str:
    """The list of things the bot understands."""
    return (
        "您可以回复：\n"
        "· 上报 —— 反映城市管理问题（可发照片、位置）\n"
        "· 我的案件 —— 查看最近上报的处理进度\n"
        "· 查询+编号 —— 例如“查询2611220007”\n"
        "· 评价 —— 对已办结的案件打分（1-5分）\n"
        "· 我的积分 —— 查看有效上报获得的积分\n"
        "· 绑定手机 —— 关联您在热线的反映记录\n"
        "· 取消 —— 随时退出当前操作\n"
        f"也可以直接提问，例如“门前五包是什么”。紧急情况请拨打110/119/120，其他问题请拨打{hotline}。"
    )


PROMPT_DESCRIBE = "请用文字或语音描述您要反映的问题，例如：“人民路与解放路路口有个井盖破了，很危险”。\n（随时回复“取消”可退出）"
PROMPT_DESCRIBE_SHORT = "请再描述得具体一些（至少5个字），例如问题是什么、已经持续多久。"
VOICE_NOT_RECOGNISED = "没能识别这段语音。请再说一遍，或直接用文字描述问题。"


def prompt_photos(count: int, limit: int) -> str:
    """Ask for photos, mentioning those already received."""
    have = f"已收到{count}张照片，可继续发送，" if count else "请发送现场照片（"
    tail = f"最多{limit}张），发完请回复“完成”；没有照片请回复“跳过”。" if not count else \
        f"最多{limit}张。发完请回复“完成”。"
    return have + tail


def photo_received(count: int, limit: int) -> str:
    """Acknowledge one photo."""
    if count >= limit:
        return f"已收到第{count}张照片（已达{limit}张上限）。"
    return f"已收到第{count}张照片，可继续发送（最多{limit}张），发完请回复“完成”。"


def photo_limit(limit: int) -> str:
    """Refuse a photo over the limit."""
    return f"每次上报最多{limit}张照片，这张没有保存。"


def prompt_location(has_here: bool) -> str:
    """Ask for the location."""
    text = "请发送问题所在位置：点击输入框旁的“+”选择“位置”发送，或直接输入详细地址（如“人民路88号门口”）。"
    if has_here:
        text += "\n回复“1”使用您当前所在的位置。"
    return text


ADDRESS_TOO_VAGUE = "没能识别出地址，请输入更详细的位置，例如“人民路与解放路交叉口东北角”或“阳光小区3栋楼下”。"
PROMPT_EDIT = "请回复数字选择要修改的内容：\n1 问题描述\n2 照片\n3 位置\n（回复“取消”放弃本次上报）"
CONFIRM_HINT = "请回复“确认”提交，“修改”更改内容，或“取消”放弃本次上报。"
CANCELLED = "已取消本次上报。需要时回复“上报”重新开始。"
NOTHING_TO_CANCEL = "当前没有进行中的操作。回复“帮助”查看可用功能。"
EXPIRED = "您上次的上报超过{minutes}分钟未完成，已自动取消。"
ALREADY_REPORTING = "您正在上报中。"
FINISH_REPORT_FIRST = "请先完成或取消当前的上报（回复“取消”可退出）。"
VIDEO_NOT_SUPPORTED = "暂不支持视频，请发送照片。"
LINK_NOT_SUPPORTED = "暂不支持链接和小程序卡片，请用文字描述或发送照片。"
START_WITH_PHOTO = "收到照片，已为您开始上报。请再用文字或语音简单描述一下问题。"
START_WITH_LOCATION = "收到位置，已为您开始上报。请用文字或语音描述一下问题。"
DESCRIPTION_ADDED = "已补充到问题描述。"
LOCATION_SAVED = "已记录位置。"


def summary(*, description: str, photos: int, voices: int, address: str, suggestion: str | None) -> str:
    """The report as it will be submitted, for the citizen to confirm."""
    lines = ["请核对您要上报的内容：", f"问题：{description[:300]}", f"照片：{photos}张" + (f"，语音{voices}条" if voices else ""),
             f"位置：{address}"]
    lines.append(f"问题类型（系统建议）：{suggestion}" if suggestion else "问题类型：提交后由受理员确认")
    lines.append("")
    lines.append("回复“确认”提交，“修改”更改内容，“取消”放弃。")
    return "\n".join(lines)


def submitted(number: str, hotline: str) -> str:
    """Thank the citizen and give the number to quote."""
    return (f"提交成功！您的上报编号：{number}。\n受理员核实后会尽快派单处理，受理、办结时会通知您。"
            f"回复“查询{number}”可查看进度。紧急情况请直接拨打{hotline}。")


def kb_answer(title: str, answer: str, hotline: str, handoff: str | None) -> str:
    """A consultation answer with the hand-off hint (the article's own contact when it names another one)."""
    other = f"此类问题也可直接联系{handoff}。" if handoff and handoff != hotline else ""
    return f"【{title}】\n{answer}\n\n{other}如需人工服务，请拨打{hotline}。如要反映具体问题，请回复“上报”。"


def kb_unknown(hotline: str, titles: list[str]) -> str:
    """No confident answer."""
    text = "抱歉，暂时没有找到相关答复。"
    if titles:
        text += "您可能想了解：\n" + "\n".join(f"· {t}" for t in titles) + "\n可以换个说法再问。"
    return text + f"\n如需人工服务请拨打{hotline}；如要反映问题，请回复“上报”。"


KB_WARMING = "智能问答正在启动，请稍后再问，或拨打{hotline}咨询。"
NO_CASES = "您还没有通过本公众号上报过问题。回复“上报”开始反映问题。"
NOT_FOUND = "没有找到编号为{number}的上报或案件（只能查询您本人上报的）。请核对编号，或回复“我的案件”查看。"
RATE_NONE = "您目前没有待评价的案件。案件办结后会通知您评价。"
RATE_PROMPT = ("请为案件{number}（{case_type}）的处理结果打分，回复数字：\n"
               "5 非常满意\n4 满意\n3 基本满意\n2 不满意\n1 非常不满意")
RATE_MANY = "您有{count}件待评价的案件：\n{lines}\n请回复“评价 编号 分数”，例如“评价{example} 5”。"
RATED = "感谢您的评价！案件{number}：{score}分（{label}）。"
RATED_BAD = ("很抱歉没能让您满意。案件{number}已记为{score}分（{label}），我们会安排工作人员再次回访核实。\n"
             "您可以直接回复文字说明不满意的原因（回复“跳过”结束）。")
ALREADY_RATED = "案件{number}已经评价过了，感谢您的反馈。"
NOT_CLOSED = "案件{number}尚未办结，办结后才能评价。"
COMMENT_THANKS = "已记录您的意见，工作人员会尽快回访。"
POINTS = "您当前的积分：{total}分。\n{lines}\n有效上报经受理立案后可获得积分。"
POINTS_NONE = "您当前的积分：0分。上报的问题经受理立案后可获得积分，回复“上报”开始。"
POINT_REASONS = {"valid_report": "有效上报", "duplicate_report": "重复上报（已并入他人案件）"}
BIND_ASK = "请回复您要绑定的手机号码（11位）。绑定后，您在热线反映的问题也能在“我的案件”中查看。回复“取消”退出。"
BIND_BAD_PHONE = "手机号码格式不正确，请回复11位手机号码，或回复“取消”退出。"
BIND_WAIT = "验证码发送太频繁，请{seconds}秒后再试。"
BIND_DAILY_LIMIT = "今天获取验证码的次数已达上限，请明天再试。"
BIND_SENT = "验证码已发送至{masked}，请在{minutes}分钟内回复6位验证码。回复“取消”退出。"
BIND_SMS = "您正在绑定“{account}”微信公众号，验证码{code}，{minutes}分钟内有效。如非本人操作请忽略。"
BIND_WRONG = "验证码不正确，还可以再试{left}次。"
BIND_TOO_MANY = "验证码错误次数过多，请回复“绑定手机”重新获取。"
BIND_EXPIRED = "验证码已过期，请回复“绑定手机”重新获取。"
BIND_DONE = "绑定成功！手机号{masked}已关联到您的微信，您在热线反映的问题也可在“我的案件”中查看。"
BIND_CANCELLED = "已退出手机绑定。"
BUSY = "系统繁忙，您刚才的消息没有处理成功，请稍后再发一次。"

# Customer-service texts for notices when no template is configured or the template failed.
NOTICE_TEXTS = {
    "accepted": "您反映的{case_type}问题已受理，案件号{case_number}。回复“查询{case_number}”可查看进度。",
    "dispatched": "案件{case_number}已派至{department}处理{deadline_text}。",
    "closed": "案件{case_number}已办结。请回复数字1-5评价处理结果：5非常满意 4满意 3基本满意 2不满意 1非常不满意。",
    "rated": "感谢您对案件{case_number}的评价，欢迎继续监督城市管理。",
}
RATE_INVITE = "案件{case_number}已办结，请回复数字1-5为处理结果打分（5非常满意，1非常不满意）。"
